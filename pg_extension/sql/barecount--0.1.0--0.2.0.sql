-- BareCount 0.1.0 -> 0.2.0: tenant suspension, feature flags and typed settings.
--
-- One file for both paths: ALTER EXTENSION barecount UPDATE runs it over a 0.1.0 database,
-- and a fresh CREATE EXTENSION barecount runs it after the 0.1.0 objects (src/lib.rs includes
-- it). tests/tests/upgrade.rs proves the two give the same schema. So everything here must be
-- valid over a 0.1.0 catalog, set its own owners and grants (functions.sql's ownership pass
-- does not run in an update), and change nothing a 0.1.0 row relies on.
-- Released files never change: the next version gets barecount--0.2.0--0.3.0.sql.

-- Tenant suspension ----------------------------------------------------------------------------
ALTER TABLE barecount.tenants ADD COLUMN suspended_at timestamptz;
ALTER TABLE barecount.tenants ADD COLUMN suspended_reason text;
COMMENT ON COLUMN barecount.tenants.suspended_at IS
    'When an admin suspended the tenant (NULL: active); a suspended tenant''s reads, writes and Flight calls are refused, its data kept';
COMMENT ON COLUMN barecount.tenants.suspended_reason IS 'Why the tenant is suspended, as the admin gave it';

-- The tenant a session acts as, refused (55000) when it is suspended. Runs inside
-- current_tenant(), as its owner (BYPASSRLS), so the read of barecount.tenants does not loop
-- through the tenants' own policy.
CREATE FUNCTION barecount._tenant_active(tenant_id text) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE since timestamptz;
BEGIN
    IF tenant_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT t.suspended_at INTO since FROM barecount.tenants t WHERE t.tenant_id = _tenant_active.tenant_id;
    IF since IS NOT NULL THEN
        RAISE EXCEPTION 'tenant "%" is suspended', tenant_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Suspended since %s; its data is kept, but nothing reads or writes it until it is resumed.', since),
                  HINT = 'An admin resumes it with barecount.tenant_resume(tenant_id).';
    END IF;
    RETURN tenant_id;
END
$$;
COMMENT ON FUNCTION barecount._tenant_active(text) IS
    'Internal (current_tenant): the tenant id back, or 55000 when the tenant is suspended';

-- As in 0.1.0 (sql/tenancy.sql), now refusing a suspended tenant. Row-level security calls it
-- once per statement (an initplan), so a suspended tenant's every read and write stops here.
CREATE OR REPLACE FUNCTION barecount.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT barecount._tenant_active(CASE
        WHEN barecount._is_admin() THEN coalesce(
            nullif(current_setting('barecount.act_as_tenant', true), ''),
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = session_user),
            'default')
        ELSE coalesce(
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = session_user),
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = barecount._outer_role()))
    END)
$$;
COMMENT ON FUNCTION barecount.current_tenant() IS
    'The tenant of the current session, derived from the login role (barecount.tenant_members); admins may switch with act_as_tenant. NULL for roles of no tenant; 55000 when the tenant is suspended.';

CREATE FUNCTION barecount.tenant_suspend(tenant_id text, reason text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE changed boolean;
BEGIN
    PERFORM barecount._require_admin('suspend a tenant');
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'barecount.tenant_suspend: a reason is required'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Say why, e.g. ''unpaid invoice 2026-11''; it is kept with the tenant and in the receipt.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = tenant_suspend.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    IF tenant_id = 'default' THEN
        RAISE EXCEPTION 'the default tenant cannot be suspended'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'It holds the installation''s own receipts (upgrades, flag definitions) and is what admins act as by default.';
    END IF;
    UPDATE barecount.tenants t SET suspended_at = now(), suspended_reason = reason
     WHERE t.tenant_id = tenant_suspend.tenant_id AND t.suspended_at IS NULL;
    changed := FOUND;
    IF changed THEN
        PERFORM barecount._ledger_append(tenant_id, 'tenant_suspend', 'tenant:' || tenant_id,
                                         jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'reason', reason));
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION barecount.tenant_suspend(text, text) IS
    'Admins: suspend a tenant (reads, writes and Flight refused with 55000, data kept), with a reason and a receipt; false if it already was';

CREATE FUNCTION barecount.tenant_resume(tenant_id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE was timestamptz;
BEGIN
    PERFORM barecount._require_admin('resume a tenant');
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = tenant_resume.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT t.suspended_at INTO was FROM barecount.tenants t WHERE t.tenant_id = tenant_resume.tenant_id FOR UPDATE;
    IF was IS NULL THEN
        RETURN false;
    END IF;
    UPDATE barecount.tenants t SET suspended_at = NULL, suspended_reason = NULL WHERE t.tenant_id = tenant_resume.tenant_id;
    PERFORM barecount._ledger_append(tenant_id, 'tenant_resume', 'tenant:' || tenant_id,
                                     jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'suspended_at', was));
    RETURN true;
END
$$;
COMMENT ON FUNCTION barecount.tenant_resume(text) IS
    'Admins: resume a suspended tenant, with a receipt; false if it was not suspended';

-- Feature flags and typed settings -------------------------------------------------------------
-- A flag has a type and a default; a staged rollout gives another value to an allow-list of
-- tenants and to a percentage of all tenants, chosen by a stable hash of flag and tenant (so
-- raising the percentage only adds tenants); a per-tenant override beats both. Every change is
-- a receipt: definitions and rollouts on the default tenant's chain, overrides on the tenant's.
CREATE TABLE barecount.flags (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND length(name) <= 63),
    value_type      text NOT NULL CHECK (value_type IN ('boolean', 'integer', 'number', 'text')),
    default_value   jsonb NOT NULL,
    rollout_value   jsonb,
    rollout_percent integer NOT NULL DEFAULT 0 CHECK (rollout_percent BETWEEN 0 AND 100),
    rollout_tenants text[] NOT NULL DEFAULT '{}',
    description     text NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    changed_by      name NOT NULL DEFAULT session_user,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE barecount.flags IS
    'Feature flags and typed settings: type, default, staged rollout (allow-list and percentage by stable hash of flag and tenant); admins change them through flag_define and flag_rollout';
CREATE TABLE barecount.flag_overrides (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    name       text NOT NULL REFERENCES barecount.flags,
    value      jsonb NOT NULL,
    set_by     name NOT NULL DEFAULT session_user,
    set_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
COMMENT ON TABLE barecount.flag_overrides IS 'A flag''s value for one tenant, beating the rollout and the default (admins: barecount.flag_set)';
ALTER TABLE barecount.flags OWNER TO barecount_owner;
ALTER TABLE barecount.flag_overrides OWNER TO barecount_owner;
REVOKE ALL ON barecount.flags, barecount.flag_overrides FROM PUBLIC;
GRANT SELECT ON barecount.flags, barecount.flag_overrides TO barecount_admin;

-- The rollout bucket of a tenant for a flag, 0..99: the first four bytes of
-- SHA-256(flag || '/' || tenant) modulo 100. Immutable: the same on every server and version.
CREATE FUNCTION barecount._flag_bucket(name text, tenant_id text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT (('x' || encode(substring(sha256(convert_to(name || '/' || tenant_id, 'UTF8')) FROM 1 FOR 4), 'hex'))::bit(32)::bigint % 100)::integer
$$;
COMMENT ON FUNCTION barecount._flag_bucket(text, text) IS
    'Internal: a tenant''s rollout bucket (0-99) for a flag, from SHA-256 of flag and tenant';

-- A value checked against a flag's type; 42804 names the flag, the type and what was given.
CREATE FUNCTION barecount._flag_check(name text, value_type text, value jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE ok boolean;
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        RAISE EXCEPTION 'flag "%": a value is required', name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    ok := CASE value_type
        WHEN 'boolean' THEN jsonb_typeof(value) = 'boolean'
        WHEN 'text' THEN jsonb_typeof(value) = 'string'
        WHEN 'number' THEN jsonb_typeof(value) = 'number'
        WHEN 'integer' THEN jsonb_typeof(value) = 'number'
                        AND value::numeric = trunc(value::numeric)
                        AND value::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
        ELSE false END;
    IF NOT ok THEN
        RAISE EXCEPTION 'flag "%" is of type %: % is not', name, value_type, value::text
            USING ERRCODE = 'datatype_mismatch',
                  HINT = CASE value_type
                      WHEN 'boolean' THEN 'Give true or false (jsonb ''true'').'
                      WHEN 'text' THEN 'Give a JSON string, e.g. ''"eu"''::jsonb.'
                      WHEN 'integer' THEN 'Give a whole number within 64 bits, e.g. ''5''::jsonb.'
                      ELSE 'Give a JSON number, e.g. ''0.5''::jsonb.' END;
    END IF;
    RETURN value;
END
$$;
COMMENT ON FUNCTION barecount._flag_check(text, text, jsonb) IS
    'Internal: a flag value checked against the flag''s type (42804 when it does not match)';

CREATE FUNCTION barecount._flag_row(name text) RETURNS barecount.flags
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE f barecount.flags;
BEGIN
    SELECT * INTO f FROM barecount.flags x WHERE x.name = _flag_row.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flag "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'barecount.flags_list() lists the flags; admins define them with barecount.flag_define.';
    END IF;
    RETURN f;
END
$$;
COMMENT ON FUNCTION barecount._flag_row(text) IS 'Internal: a flag''s definition, or 42704';

CREATE FUNCTION barecount.flag_define(name text, value_type text, default_value jsonb, description text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE f barecount.flags;
BEGIN
    PERFORM barecount._require_admin('define a flag');
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' OR length(name) > 63 THEN
        RAISE EXCEPTION 'flag name "%" is not valid', name
            USING ERRCODE = 'invalid_name',
                  HINT = 'Lower-case words of letters, digits and underscores joined by dots, e.g. flight.parallel_load; at most 63 long.';
    END IF;
    IF value_type IS NULL OR value_type NOT IN ('boolean', 'integer', 'number', 'text') THEN
        RAISE EXCEPTION 'flag "%": type "%" is not one of boolean, integer, number, text', name, value_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF description IS NULL OR btrim(description) = '' THEN
        RAISE EXCEPTION 'flag "%": a description is required', name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM barecount._flag_check(name, value_type, default_value);
    SELECT * INTO f FROM barecount.flags x WHERE x.name = flag_define.name FOR UPDATE;
    IF FOUND THEN
        IF f.value_type <> value_type THEN
            RAISE EXCEPTION 'flag "%" is of type %, not %', name, f.value_type, value_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'A flag keeps its type; define a flag of another name.';
        END IF;
        IF f.default_value = default_value AND f.description = description THEN
            RETURN f.version;  -- the same definition again: nothing changes
        END IF;
        UPDATE barecount.flags x SET default_value = flag_define.default_value, description = flag_define.description,
               version = x.version + 1, changed_by = session_user, changed_at = now()
         WHERE x.name = flag_define.name RETURNING * INTO f;
    ELSE
        INSERT INTO barecount.flags AS x (name, value_type, default_value, description)
        VALUES (name, value_type, default_value, description) RETURNING * INTO f;
    END IF;
    PERFORM barecount._ledger_append('default', 'flag_define', 'flag:' || name || '@' || f.version,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'type', value_type,
                           'default', default_value, 'description', description));
    RETURN f.version;
END
$$;
COMMENT ON FUNCTION barecount.flag_define(text, text, jsonb, text) IS
    'Admins: define a flag or typed setting (boolean, integer, number, text) with its default and description, or change its default; the same definition again is a no-op; returns the version; a receipt per change';

CREATE FUNCTION barecount.flag_rollout(name text, percent integer, tenants text[] DEFAULT '{}',
                                       value jsonb DEFAULT 'true')
    RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE f barecount.flags; unknown text[];
BEGIN
    PERFORM barecount._require_admin('roll out a flag');
    f := barecount._flag_row(name);
    IF percent IS NULL OR percent NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'flag "%": rollout percent % is not between 0 and 100', name, percent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    tenants := coalesce(tenants, '{}');
    SELECT array_agg(t ORDER BY t) INTO unknown FROM unnest(tenants) t
     WHERE NOT EXISTS (SELECT 1 FROM barecount.tenants x WHERE x.tenant_id = t);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'flag "%": no tenant %', name, array_to_string(unknown, ', ')
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM barecount._flag_check(name, f.value_type, value);
    SELECT array_agg(DISTINCT t ORDER BY t) INTO tenants FROM unnest(tenants) t;
    tenants := coalesce(tenants, '{}');
    IF f.rollout_value IS NOT DISTINCT FROM value AND f.rollout_percent = percent AND f.rollout_tenants = tenants THEN
        RETURN f.version;
    END IF;
    UPDATE barecount.flags x SET rollout_value = flag_rollout.value, rollout_percent = percent, rollout_tenants = tenants,
           version = x.version + 1, changed_by = session_user, changed_at = now()
     WHERE x.name = flag_rollout.name RETURNING * INTO f;
    PERFORM barecount._ledger_append('default', 'flag_rollout', 'flag:' || name || '@' || f.version,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'value', value,
                           'percent', percent, 'tenants', to_jsonb(tenants)));
    RETURN f.version;
END
$$;
COMMENT ON FUNCTION barecount.flag_rollout(text, integer, text[], jsonb) IS
    'Admins: give a flag the value to the listed tenants and to percent of all tenants (by a stable hash of flag and tenant: raising it only adds tenants); percent 0 and no tenants ends the rollout; a receipt per change';

CREATE FUNCTION barecount.flag_set(name text, tenant_id text, value jsonb) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE f barecount.flags; old jsonb;
BEGIN
    PERFORM barecount._require_admin('set a flag for a tenant');
    f := barecount._flag_row(name);
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = flag_set.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT o.value INTO old FROM barecount.flag_overrides o WHERE o.tenant_id = flag_set.tenant_id AND o.name = flag_set.name FOR UPDATE;
    IF value IS NULL THEN
        IF old IS NULL THEN
            RETURN false;
        END IF;
        DELETE FROM barecount.flag_overrides o WHERE o.tenant_id = flag_set.tenant_id AND o.name = flag_set.name;
    ELSE
        PERFORM barecount._flag_check(name, f.value_type, value);
        IF old = value THEN
            RETURN false;
        END IF;
        INSERT INTO barecount.flag_overrides AS o (tenant_id, name, value) VALUES (tenant_id, name, value)
        ON CONFLICT ON CONSTRAINT flag_overrides_pkey DO UPDATE SET value = EXCLUDED.value, set_by = session_user, set_at = now();
    END IF;
    PERFORM barecount._ledger_append(tenant_id, 'flag_set', 'flag:' || name,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'from', old, 'to', value));
    RETURN true;
END
$$;
COMMENT ON FUNCTION barecount.flag_set(text, text, jsonb) IS
    'Admins: override a flag for one tenant (value NULL removes the override); false when nothing changed; a receipt on the tenant''s chain per change';

-- A flag's value for a tenant and where it came from: override, allow-list, rollout or default.
CREATE FUNCTION barecount._flag_resolve(f barecount.flags, tenant_id text, OUT value jsonb, OUT source text)
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce(o.value, CASE WHEN f.rollout_value IS NOT NULL
                                   AND (tenant_id = ANY (f.rollout_tenants)
                                        OR barecount._flag_bucket(f.name, tenant_id) < f.rollout_percent)
                                  THEN f.rollout_value ELSE f.default_value END),
           CASE WHEN o.value IS NOT NULL THEN 'override'
                WHEN f.rollout_value IS NOT NULL AND tenant_id = ANY (f.rollout_tenants) THEN 'allow-list'
                WHEN f.rollout_value IS NOT NULL AND barecount._flag_bucket(f.name, tenant_id) < f.rollout_percent THEN 'rollout'
                ELSE 'default' END
      FROM (SELECT 1) one
      LEFT JOIN barecount.flag_overrides o ON o.tenant_id = _flag_resolve.tenant_id AND o.name = f.name
$$;
COMMENT ON FUNCTION barecount._flag_resolve(barecount.flags, text) IS
    'Internal: a flag''s value for a tenant and its source (override, allow-list, rollout, default)';

CREATE FUNCTION barecount.setting(name text) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT (barecount._flag_resolve(barecount._flag_row(name), barecount.current_tenant())).value $$;
COMMENT ON FUNCTION barecount.setting(text) IS
    'A flag or typed setting''s value for the current tenant, as jsonb of its type (42704 for an unknown name)';

CREATE FUNCTION barecount.flag(name text) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE f barecount.flags;
BEGIN
    f := barecount._flag_row(name);
    IF f.value_type <> 'boolean' THEN
        RAISE EXCEPTION 'flag "%" is of type %, not boolean', name, f.value_type
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Read it with barecount.setting(name), which returns jsonb of any type.';
    END IF;
    RETURN (barecount._flag_resolve(f, barecount.current_tenant())).value::boolean;
END
$$;
COMMENT ON FUNCTION barecount.flag(text) IS
    'Whether a boolean flag is on for the current tenant (override, allow-list, rollout bucket, else default); 42804 for a flag of another type';

CREATE FUNCTION barecount.flags_list()
    RETURNS TABLE (name text, value_type text, value jsonb, source text, version integer, description text)
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT f.name, f.value_type, r.value, r.source, f.version, f.description
      FROM barecount.flags f, barecount.current_tenant() t(id),
           LATERAL barecount._flag_resolve(f, t.id) r
     ORDER BY f.name
$$;
COMMENT ON FUNCTION barecount.flags_list() IS
    'Every flag with its value for the current tenant, where the value came from and the definition''s version (what barecount-flight caches)';

CREATE FUNCTION barecount.gateway_flags(tenant_id text)
    RETURNS TABLE (name text, value jsonb, version integer)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._require_admin('read another tenant''s flags');
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = gateway_flags.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY SELECT f.name, r.value, f.version
                   FROM barecount.flags f, LATERAL barecount._flag_resolve(f, gateway_flags.tenant_id) r
                  ORDER BY f.name;
END
$$;
COMMENT ON FUNCTION barecount.gateway_flags(text) IS
    'For gateways (members of barecount_admin): every flag''s value for a tenant (barecount-flight caches them for --flag-max-age-secs)';

-- Built-in flags: switches BareCount itself reads.
INSERT INTO barecount.flags (name, value_type, default_value, description, changed_by)
VALUES ('flight.parallel_load', 'boolean', 'true',
        'barecount-flight loads large published versions with parallel COPYs over block ranges; off: one COPY per load',
        'barecount');

-- Owners, grants ---------------------------------------------------------------------------------
ALTER FUNCTION barecount.tenant_suspend(text, text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.tenant_resume(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag_define(text, text, jsonb, text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag_rollout(text, integer, text[], jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag_set(text, text, jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.setting(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flags_list() OWNER TO barecount_owner;
ALTER FUNCTION barecount.gateway_flags(text) OWNER TO barecount_owner;
-- As functions.sql does for the rest (in a fresh install it runs again after this file, with
-- the same result): nothing is PUBLIC; each role gets what it calls.
REVOKE EXECUTE ON FUNCTION barecount._tenant_active(text), barecount.tenant_suspend(text, text),
                           barecount.tenant_resume(text), barecount._flag_bucket(text, text),
                           barecount._flag_check(text, text, jsonb), barecount._flag_row(text),
                           barecount._flag_resolve(barecount.flags, text),
                           barecount.flag_define(text, text, jsonb, text),
                           barecount.flag_rollout(text, integer, text[], jsonb),
                           barecount.flag_set(text, text, jsonb), barecount.setting(text),
                           barecount.flag(text), barecount.flags_list(), barecount.gateway_flags(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION barecount.setting(text), barecount.flag(text), barecount.flags_list()
    TO barecount_reader;
GRANT EXECUTE ON FUNCTION barecount.tenant_suspend(text, text), barecount.tenant_resume(text),
                          barecount.flag_define(text, text, jsonb, text),
                          barecount.flag_rollout(text, integer, text[], jsonb),
                          barecount.flag_set(text, text, jsonb), barecount.gateway_flags(text)
    TO barecount_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA barecount TO barecount_owner;

-- The upgrade's own receipt, in an update only. Postgres records the new version in
-- pg_extension before it runs the script, so that cannot tell the two paths apart; the ledger's
-- owner can: functions.sql (the last part of an install) hands the catalog to barecount_owner,
-- so here, inside a fresh install, the ledger still belongs to the installing superuser.
DO $receipt$
BEGIN
    IF (SELECT relowner FROM pg_class WHERE oid = 'barecount.ledger'::regclass) = 'barecount_owner'::regrole THEN
        PERFORM barecount._ledger_append('default', 'extension_upgrade', 'extension:barecount',
            jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'from', '0.1.0', 'to', '0.2.0',
                               'script', 'barecount--0.1.0--0.2.0.sql'));
    END IF;
END
$receipt$;

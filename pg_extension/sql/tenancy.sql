-- Tenancy and access: roles, the role-to-tenant map, the current tenant, row-level security.
-- Runs after catalog.sql inside CREATE EXTENSION.

-- Roles ----------------------------------------------------------------------------------------
-- Cluster-wide, so created only when absent (another database may have made them already).
DO $roles$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['barecount_reader', 'barecount_engineer', 'barecount_publisher', 'barecount_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
    -- engineers and publishers read what readers read; admins do everything.
    IF NOT pg_has_role('barecount_engineer', 'barecount_reader', 'MEMBER') THEN
        GRANT barecount_reader TO barecount_engineer;
    END IF;
    IF NOT pg_has_role('barecount_publisher', 'barecount_reader', 'MEMBER') THEN
        GRANT barecount_reader TO barecount_publisher;
    END IF;
    IF NOT pg_has_role('barecount_admin', 'barecount_engineer', 'MEMBER') THEN
        GRANT barecount_engineer TO barecount_admin;
    END IF;
    IF NOT pg_has_role('barecount_admin', 'barecount_publisher', 'MEMBER') THEN
        GRANT barecount_publisher TO barecount_admin;
    END IF;
END
$roles$;
COMMENT ON ROLE barecount_reader IS 'BareCount: reads published datasets of its tenant';
COMMENT ON ROLE barecount_engineer IS 'BareCount: registers contracts, ingests, builds GDP models and KPIs for its tenant';
COMMENT ON ROLE barecount_publisher IS 'BareCount: publishes datasets and closes periods for its tenant';
COMMENT ON ROLE barecount_admin IS 'BareCount: everything, for every tenant (acts as one with barecount.act_as_tenant)';

-- Who belongs to which tenant ------------------------------------------------------------------
CREATE TABLE barecount.tenant_members (
    role_name  name PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    added_by   name NOT NULL DEFAULT session_user,
    added_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE barecount.tenant_members IS 'Maps login roles to their tenant; a role belongs to at most one tenant';

CREATE FUNCTION barecount._is_admin() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_has_role(session_user, 'barecount_admin', 'MEMBER') $$;
COMMENT ON FUNCTION barecount._is_admin() IS
    'True when the session''s login role is a BareCount admin (superusers are). Uses session_user, so SET ROLE cannot change it.';

-- The current tenant comes from who is connected: the session's login role through
-- barecount.tenant_members (or, for roles without a mapping, the role set with SET ROLE, as
-- connection poolers do). Admins may act as any tenant through barecount.act_as_tenant(); the
-- setting it writes is honoured only for admins, so an ordinary session that sets it changes
-- nothing.
CREATE FUNCTION barecount.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE
        WHEN barecount._is_admin() THEN coalesce(
            nullif(current_setting('barecount.act_as_tenant', true), ''),
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = session_user),
            'default')
        ELSE coalesce(
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = session_user),
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = current_user))
    END
$$;
COMMENT ON FUNCTION barecount.current_tenant() IS
    'The tenant of the current session, derived from the login role (barecount.tenant_members); admins may switch with act_as_tenant. NULL for roles of no tenant.';

CREATE FUNCTION barecount._require_admin(action text) RETURNS void
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT barecount._is_admin() THEN
        RAISE EXCEPTION 'permission denied to %', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only members of barecount_admin may do this.';
    END IF;
END
$$;
COMMENT ON FUNCTION barecount._require_admin(text) IS 'Raises 42501 unless the session''s login role is a BareCount admin';

CREATE FUNCTION barecount.tenant_create(tenant_id text, name text) RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._require_admin('create a tenant');
    IF tenant_id IS NULL OR tenant_id !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'tenant id "%" is not valid', tenant_id
            USING ERRCODE = 'invalid_name',
                  HINT = 'Use a lower-case name of letters, digits and underscores, starting with a letter.';
    END IF;
    INSERT INTO barecount.tenants AS t (tenant_id, name) VALUES (tenant_create.tenant_id, tenant_create.name);
    RETURN tenant_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'tenant "%" already exists', tenant_create.tenant_id USING ERRCODE = 'duplicate_object';
END
$$;
COMMENT ON FUNCTION barecount.tenant_create(text, text) IS 'Create a tenant (admins only)';

CREATE FUNCTION barecount.tenant_add_member(tenant_id text, member regrole) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE existing text;
BEGIN
    PERFORM barecount._require_admin('map a role to a tenant');
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = tenant_add_member.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_add_member.tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT m.tenant_id INTO existing FROM barecount.tenant_members m WHERE m.role_name = member::text;
    IF existing IS NOT NULL AND existing <> tenant_add_member.tenant_id THEN
        RAISE EXCEPTION 'role % already belongs to tenant "%"', member, existing
            USING ERRCODE = 'duplicate_object', HINT = 'Remove it with barecount.tenant_remove_member first.';
    END IF;
    INSERT INTO barecount.tenant_members (role_name, tenant_id) VALUES (member::text, tenant_add_member.tenant_id)
        ON CONFLICT (role_name) DO NOTHING;
END
$$;
COMMENT ON FUNCTION barecount.tenant_add_member(text, regrole) IS 'Map a role to a tenant (admins only); grant it barecount_reader/engineer/publisher separately';

CREATE FUNCTION barecount.tenant_remove_member(member regrole) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._require_admin('unmap a role from its tenant');
    DELETE FROM barecount.tenant_members WHERE role_name = member::text;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION barecount.tenant_remove_member(regrole) IS 'Remove a role''s tenant mapping (admins only)';

CREATE FUNCTION barecount.act_as_tenant(tenant_id text) RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._require_admin('act as another tenant');
    IF tenant_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = act_as_tenant.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM set_config('barecount.act_as_tenant', coalesce(tenant_id, ''), false);
    RETURN barecount.current_tenant();
END
$$;
COMMENT ON FUNCTION barecount.act_as_tenant(text) IS
    'Admins only: act as the given tenant for the rest of the session (NULL to stop). Ignored for everyone else even if they set the setting themselves.';

-- Row-level security ---------------------------------------------------------------------------
-- Applies to every tenant-scoped table: USING and WITH CHECK tenant_id = current_tenant().
-- FORCE makes the table owner subject to it too; superusers and BYPASSRLS roles are not
-- (the extension's own privileged sections filter by tenant themselves).
CREATE FUNCTION barecount._protect_table(rel regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = rel AND polname = 'tenant_isolation') THEN
        EXECUTE format('CREATE POLICY tenant_isolation ON %s USING (tenant_id = barecount.current_tenant()) '
                       'WITH CHECK (tenant_id = barecount.current_tenant())', rel);
        EXECUTE format('COMMENT ON POLICY tenant_isolation ON %s IS %L', rel,
                       'BareCount: rows of the current tenant only');
    END IF;
END
$$;
COMMENT ON FUNCTION barecount._protect_table(regclass) IS 'Enable and force row-level security with the tenant_isolation policy on a tenant-scoped table';

SELECT barecount._protect_table(t::regclass) FROM unnest(ARRAY[
    'barecount.contracts', 'barecount.contract_datasets', 'barecount.contract_settings', 'barecount.batches', 'barecount.quarantine',
    'barecount.ledger', 'barecount.datasets', 'barecount.dataset_versions', 'barecount.tenant_members']) t;

-- Tenants see their own tenant row; admins see all.
ALTER TABLE barecount.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE barecount.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON barecount.tenants USING (tenant_id = barecount.current_tenant() OR barecount._is_admin());
COMMENT ON POLICY tenant_isolation ON barecount.tenants IS 'BareCount: a tenant sees its own row; admins see all';

-- Tables that engineers create in gdp and kpi become tenant-scoped stores: they must carry
-- tenant_id, hold only the creator's tenant's rows, get row-level security, and pass to the
-- extension owner (so their creator cannot switch row-level security off again).
CREATE FUNCTION barecount._guard_store_tables() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    obj record;
    foreign_rows bigint;
    ext_owner name := (SELECT r.rolname FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner WHERE e.extname = 'barecount');
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
               WHERE object_type = 'table' AND schema_name IN ('gdp', 'kpi') LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = obj.objid AND attname = 'tenant_id'
                        AND atttypid = 'text'::regtype AND NOT attisdropped) THEN
            RAISE EXCEPTION 'table % must have a column tenant_id of type text', obj.object_identity
                USING ERRCODE = 'invalid_table_definition',
                      HINT = 'Every store is tenant-scoped: add tenant_id text NOT NULL DEFAULT barecount.current_tenant(), or select raw.<dataset>.tenant_id.';
        END IF;
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id IS DISTINCT FROM barecount.current_tenant()',
                       obj.object_identity) INTO foreign_rows;
        IF foreign_rows > 0 THEN
            RAISE EXCEPTION 'table % holds % row(s) of another tenant', obj.object_identity, foreign_rows
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM barecount._protect_table(obj.objid::regclass);
        EXECUTE format('ALTER TABLE %s OWNER TO %I', obj.object_identity, ext_owner);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO barecount_engineer', obj.object_identity);
        EXECUTE format('GRANT SELECT ON %s TO barecount_publisher', obj.object_identity);
    END LOOP;
END
$$;
COMMENT ON FUNCTION barecount._guard_store_tables() IS 'Event trigger: tables created in gdp and kpi must carry tenant_id and get row-level security';
CREATE EVENT TRIGGER barecount_guard_store_tables ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION barecount._guard_store_tables();
COMMENT ON EVENT TRIGGER barecount_guard_store_tables IS 'BareCount: tenant-scope tables created in gdp and kpi';

-- Grants ---------------------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA barecount FROM PUBLIC;
GRANT USAGE ON SCHEMA barecount, published TO barecount_reader;
GRANT USAGE ON SCHEMA raw TO barecount_engineer, barecount_publisher;
GRANT USAGE, CREATE ON SCHEMA gdp, kpi TO barecount_engineer;
GRANT USAGE ON SCHEMA gdp, kpi TO barecount_publisher;
GRANT SELECT ON barecount.datasets, barecount.dataset_versions TO barecount_reader;
GRANT SELECT ON barecount.contracts, barecount.contract_datasets, barecount.contract_versions, barecount.contract_settings,
                barecount.batches, barecount.quarantine, barecount.ledger
    TO barecount_engineer, barecount_publisher;
GRANT SELECT ON barecount.tenants, barecount.tenant_members TO barecount_reader;

-- Tokens for non-SQL clients -------------------------------------------------------------------
-- Only a salted hash of each secret is kept; nobody is granted SELECT on the table, the
-- token functions read it for their own tenant.
CREATE TABLE barecount.tokens (
    tenant_id   text NOT NULL REFERENCES barecount.tenants,
    token_id    text PRIMARY KEY,
    name        text,
    scopes      text[] NOT NULL,
    salt        text NOT NULL,
    secret_hash text NOT NULL,
    created_by  name NOT NULL DEFAULT session_user,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoked_by  name
);
COMMENT ON TABLE barecount.tokens IS 'Access tokens for non-SQL clients: scopes, expiry, revocation and a salted SHA-256 of the secret (never the secret)';
SELECT barecount._protect_table('barecount.tokens');

-- Plan limits ----------------------------------------------------------------------------------
CREATE TABLE barecount.entitlements (
    tenant_id               text PRIMARY KEY REFERENCES barecount.tenants,
    max_datasets            integer CHECK (max_datasets >= 0),
    max_published_versions  integer CHECK (max_published_versions >= 0),
    max_exports_per_day     integer CHECK (max_exports_per_day >= 0),
    max_rows_served_per_day bigint CHECK (max_rows_served_per_day >= 0),
    updated_by              name NOT NULL DEFAULT session_user,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE barecount.entitlements IS 'Per-tenant plan limits; NULL (or no row) means unlimited. Enforced where the action happens, with SQLSTATE 53400.';
SELECT barecount._protect_table('barecount.entitlements');

-- Metering -------------------------------------------------------------------------------------
CREATE TABLE barecount.usage (
    tenant_id text NOT NULL REFERENCES barecount.tenants,
    day       date NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('ingest', 'materialize', 'publish', 'export', 'read')),
    events    bigint NOT NULL DEFAULT 0,
    rows      bigint NOT NULL DEFAULT 0,
    bytes     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, kind)
);
COMMENT ON TABLE barecount.usage IS 'Usage per tenant, UTC day and kind (ingest, materialize, publish, export, read): events, rows, bytes';
SELECT barecount._protect_table('barecount.usage');
REVOKE ALL ON barecount.tokens, barecount.entitlements, barecount.usage FROM PUBLIC;
GRANT SELECT ON barecount.entitlements, barecount.usage TO barecount_reader;

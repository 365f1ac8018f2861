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
    -- The role privileged sections run as: owns the catalog and stores, never a superuser,
    -- never logs in, inherits nothing. BYPASSRLS because the ledger is one chain for all
    -- tenants; code running as it filters by tenant itself (see src/privilege.rs).
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'barecount_owner') THEN
        CREATE ROLE barecount_owner NOLOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;
    ELSIF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'barecount_owner'
                     AND (rolsuper OR rolcanlogin OR rolinherit OR rolcreatedb OR rolcreaterole
                          OR rolreplication OR NOT rolbypassrls)) THEN
        -- only when changed: other databases may be creating the extension concurrently
        ALTER ROLE barecount_owner NOLOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;
    END IF;
    IF shobj_description('barecount_owner'::regrole, 'pg_authid') IS NULL THEN
        COMMENT ON ROLE barecount_owner IS 'BareCount: owns the catalog and stores; BareCount''s privileged sections run as it (NOLOGIN, NOSUPERUSER, NOINHERIT, BYPASSRLS). Grant it to nobody.';
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

-- Parallel safety (audited for issue 13): the PARALLEL SAFE functions of this file (_is_admin,
-- current_tenant, _require_admin, _tenant_schema, _untrusted_code, _assert_store_relation) only
-- read catalogs and settings. A worker has its leader's session user, outer role and settings,
-- so each answers there as in the leader. current_tenant is SECURITY DEFINER: the switch to its
-- owner for the call is allowed in a worker (unlike SET ROLE), and its SET search_path clause is
-- saved and restored per call, which parallel mode permits. None writes, locks or caches.
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
            (SELECT tenant_id FROM barecount.tenant_members WHERE role_name = barecount._outer_role()))
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
DECLARE layer text;
BEGIN
    PERFORM barecount._require_admin('create a tenant');
    IF name IS NULL THEN
        RAISE EXCEPTION 'barecount.tenant_create: argument name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF tenant_id IS NULL OR tenant_id !~ '^[a-z][a-z0-9_]{0,52}$' THEN
        RAISE EXCEPTION 'tenant id "%" is not valid', tenant_id
            USING ERRCODE = 'invalid_name',
                  HINT = 'Use a lower-case name of letters, digits and underscores, starting with a letter, at most 53 long.';
    END IF;
    INSERT INTO barecount.tenants AS t (tenant_id, name) VALUES (tenant_create.tenant_id, tenant_create.name);
    -- the tenant's own layer schemas: its models, KPIs and published datasets live there, so
    -- two tenants may both own "orders" (raw stores stay shared, rows isolated by RLS)
    FOREACH layer IN ARRAY ARRAY['gdp', 'kpi', 'published'] LOOP
        EXECUTE format('CREATE SCHEMA %I', layer || '_' || tenant_create.tenant_id);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', layer || '_' || tenant_create.tenant_id,
                       format('BareCount %s schema of tenant %s', layer, tenant_create.tenant_id));
    END LOOP;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I, %I TO barecount_engineer',
                   'gdp_' || tenant_create.tenant_id, 'kpi_' || tenant_create.tenant_id);
    EXECUTE format('GRANT USAGE ON SCHEMA %I, %I TO barecount_publisher',
                   'gdp_' || tenant_create.tenant_id, 'kpi_' || tenant_create.tenant_id);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO barecount_reader', 'published_' || tenant_create.tenant_id);
    PERFORM barecount._ledger_append(tenant_create.tenant_id, 'tenant_create', 'tenant:' || tenant_create.tenant_id,
                                     jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'name', tenant_create.name));
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
    IF tenant_id IS NULL OR member IS NULL THEN
        RAISE EXCEPTION 'barecount.tenant_add_member: arguments tenant_id and member must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = tenant_add_member.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_add_member.tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT m.tenant_id INTO existing FROM barecount.tenant_members m WHERE m.role_name = pg_get_userbyid(member)::text;
    IF existing IS NOT NULL AND existing <> tenant_add_member.tenant_id THEN
        RAISE EXCEPTION 'role % already belongs to tenant "%"', member, existing
            USING ERRCODE = 'duplicate_object', HINT = 'Remove it with barecount.tenant_remove_member first.';
    END IF;
    INSERT INTO barecount.tenant_members (role_name, tenant_id) VALUES (pg_get_userbyid(member)::text, tenant_add_member.tenant_id)
        ON CONFLICT (role_name) DO NOTHING;
    IF FOUND THEN
        PERFORM barecount._ledger_append(tenant_add_member.tenant_id, 'member_add', 'role:' || pg_get_userbyid(member)::text,
                                         jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'role', pg_get_userbyid(member)::text));
    END IF;
END
$$;
COMMENT ON FUNCTION barecount.tenant_add_member(text, regrole) IS 'Map a role to a tenant (admins only); grant it barecount_reader/engineer/publisher separately';

CREATE FUNCTION barecount.tenant_remove_member(member regrole) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE gone text;
BEGIN
    PERFORM barecount._require_admin('unmap a role from its tenant');
    DELETE FROM barecount.tenant_members WHERE role_name = pg_get_userbyid(member)::text RETURNING tenant_id INTO gone;
    IF gone IS NOT NULL THEN
        PERFORM barecount._ledger_append(gone, 'member_remove', 'role:' || pg_get_userbyid(member)::text,
                                         jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'role', pg_get_userbyid(member)::text));
    END IF;
    RETURN gone IS NOT NULL;
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
    -- (SELECT current_tenant()) is an initplan: evaluated once per statement, not once per row
    -- (the function is SECURITY DEFINER, so Postgres cannot inline it; per row it cost ~200x)
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = rel AND polname = 'tenant_isolation') THEN
        EXECUTE format('CREATE POLICY tenant_isolation ON %s USING (tenant_id = (SELECT barecount.current_tenant())) '
                       'WITH CHECK (tenant_id = (SELECT barecount.current_tenant()))', rel);
        EXECUTE format('COMMENT ON POLICY tenant_isolation ON %s IS %L', rel,
                       'BareCount: rows of the current tenant only');
    ELSE
        EXECUTE format('ALTER POLICY tenant_isolation ON %s USING (tenant_id = (SELECT barecount.current_tenant())) '
                       'WITH CHECK (tenant_id = (SELECT barecount.current_tenant()))', rel);
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
CREATE POLICY tenant_isolation ON barecount.tenants USING (tenant_id = (SELECT barecount.current_tenant()) OR (SELECT barecount._is_admin()));
COMMENT ON POLICY tenant_isolation ON barecount.tenants IS 'BareCount: a tenant sees its own row; admins see all';

-- The schema holding the current tenant's relations of a layer (gdp, kpi, published): the plain
-- one for the default tenant, <layer>_<tenant> for the others (see core/src/layer.rs).
CREATE FUNCTION barecount._tenant_schema(layer text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN barecount.current_tenant() = 'default' THEN layer
                      ELSE layer || '_' || barecount.current_tenant() END $$;
COMMENT ON FUNCTION barecount._tenant_schema(text) IS
    'The schema holding the current tenant''s relations of a layer: gdp/kpi/published for the default tenant, <layer>_<tenant> for the others';

-- Code a tenant role could have attached to a relation: every function, operator, type,
-- operator class or collation that the relation, its columns, defaults, constraints, indexes,
-- triggers and policies depend on, unless built into Postgres or part of this extension; every
-- rule; every foreign key. BareCount never writes a relation, as barecount_owner, that carries
-- any of these.
CREATE FUNCTION barecount._untrusted_code(rel regclass) RETURNS text[]
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH trusted AS (
        SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'barecount' AND d.deptype = 'e'),
    parts AS (
        SELECT 'pg_class'::regclass::oid AS classid, rel::oid AS objid
        UNION
        SELECT d.classid, d.objid FROM pg_depend d
         WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = rel AND d.deptype IN ('a', 'i', 'n'))
    SELECT coalesce(array_agg(DISTINCT what ORDER BY what), '{}') FROM (
        SELECT pg_describe_object(d.refclassid, d.refobjid, 0) AS what
          FROM parts p JOIN pg_depend d ON d.classid = p.classid AND d.objid = p.objid
         WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_type'::regclass, 'pg_operator'::regclass,
                                'pg_opclass'::regclass, 'pg_opfamily'::regclass, 'pg_collation'::regclass)
           AND d.refobjid >= 16384
           AND NOT EXISTS (SELECT 1 FROM trusted t WHERE t.classid = d.refclassid AND t.objid = d.refobjid)
        UNION ALL
        SELECT pg_describe_object(p.classid, p.objid, 0) FROM parts p WHERE p.classid = 'pg_rewrite'::regclass
        UNION ALL
        SELECT pg_describe_object('pg_constraint'::regclass, c.oid, 0) FROM pg_constraint c
         WHERE c.conrelid = rel AND c.contype = 'f'
        UNION ALL
        SELECT pg_describe_object('pg_class'::regclass, i.inhparent, 0) FROM pg_inherits i WHERE i.inhrelid = rel
    ) x
$$;
COMMENT ON FUNCTION barecount._untrusted_code(regclass) IS
    'The user-made objects (functions, operators, types, operator classes, collations), rules, foreign keys and parents a relation carries or depends on; empty when BareCount may write it';

-- A relation BareCount may read and write as barecount_owner: a plain table it owns that
-- carries no user code. Raises 42501 naming what is wrong.
CREATE FUNCTION barecount._assert_store_relation(rel regclass, what text) RETURNS void
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    kind "char";
    owner name;
    code text[];
BEGIN
    SELECT c.relkind, pg_get_userbyid(c.relowner) INTO kind, owner FROM pg_class c WHERE c.oid = rel;
    IF kind IS DISTINCT FROM 'r' THEN
        RAISE EXCEPTION '% is not a plain table', what
            USING ERRCODE = 'insufficient_privilege', DETAIL = format('%s has relkind %s', rel, kind),
                  HINT = 'BareCount writes only tables it made; drop the object that took the name.';
    END IF;
    IF owner IS DISTINCT FROM 'barecount_owner' THEN
        RAISE EXCEPTION '% is owned by %, not by BareCount', what, owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'BareCount writes only tables it owns; drop it and let BareCount create it.';
    END IF;
    code := barecount._untrusted_code(rel);
    IF cardinality(code) > 0 THEN
        RAISE EXCEPTION '% carries code BareCount did not make: %', what, array_to_string(code, ', ')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Store tables may use only built-in types and functions.';
    END IF;
END
$$;
COMMENT ON FUNCTION barecount._assert_store_relation(regclass, text) IS
    'Raises 42501 unless the relation is a plain table owned by barecount_owner that carries no user code';

-- Tables created in gdp and kpi become tenant-scoped stores: they must carry tenant_id, hold
-- only the creator's tenant's rows, carry no user code, get row-level security, and pass to
-- barecount_owner (so their creator cannot attach triggers, rules, defaults or policies, or
-- switch row-level security off, afterwards). Superuser-owned because only a superuser may
-- take ownership of another role's table; it executes nothing of the table's before the code
-- check passed.
CREATE FUNCTION barecount._guard_store_tables() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    obj record;
    foreign_rows bigint;
    code text[];
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
               WHERE object_type IN ('table', 'view', 'materialized view', 'foreign table')
                 AND schema_name ~ '^(gdp|kpi)(_[a-z][a-z0-9_]*)?$' LOOP
        -- a tenant makes tables only in its own layer schemas
        IF obj.schema_name NOT IN (barecount._tenant_schema('gdp'), barecount._tenant_schema('kpi')) THEN
            RAISE EXCEPTION '% % is in schema %, not one of tenant "%"', obj.object_type, obj.object_identity,
                obj.schema_name, barecount.current_tenant()
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('Tenant "%s" makes its tables in %s and %s.', barecount.current_tenant(),
                                    barecount._tenant_schema('gdp'), barecount._tenant_schema('kpi'));
        END IF;
        IF obj.object_type <> 'table' OR (SELECT relkind FROM pg_class WHERE oid = obj.objid) <> 'r' THEN
            RAISE EXCEPTION '% %: only plain tables may be created in gdp and kpi', obj.object_type, obj.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Put views and other objects in a schema of your own.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = obj.objid AND attname = 'tenant_id'
                        AND atttypid = 'text'::regtype AND NOT attisdropped) THEN
            RAISE EXCEPTION 'table % must have a column tenant_id of type text', obj.object_identity
                USING ERRCODE = 'invalid_table_definition',
                      HINT = 'Every store is tenant-scoped: add tenant_id text NOT NULL DEFAULT barecount.current_tenant(), or select raw.<dataset>.tenant_id.';
        END IF;
        code := barecount._untrusted_code(obj.objid::regclass);
        IF cardinality(code) > 0 THEN
            RAISE EXCEPTION 'table % carries code BareCount did not make: %', obj.object_identity, array_to_string(code, ', ')
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Tables in gdp and kpi may use only built-in types and functions (and barecount.*): no user functions in defaults, checks or generated columns, no user types, no foreign keys.';
        END IF;
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id IS DISTINCT FROM (SELECT barecount.current_tenant())',
                       obj.object_identity) INTO foreign_rows;
        IF foreign_rows > 0 THEN
            RAISE EXCEPTION 'table % holds % row(s) of another tenant', obj.object_identity, foreign_rows
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        EXECUTE format('ALTER TABLE %s OWNER TO barecount_owner', obj.object_identity);
        PERFORM barecount._protect_table(obj.objid::regclass);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO barecount_engineer', obj.object_identity);
        EXECUTE format('GRANT SELECT ON %s TO barecount_publisher', obj.object_identity);
        PERFORM barecount._record_store_writes(obj.objid::regclass);
        -- a table made outside BareCount (with its first rows) is a change of state too
        PERFORM barecount._store_write_receipt(obj.objid, 'CREATE');
    END LOOP;
END
$$;
COMMENT ON FUNCTION barecount._guard_store_tables() IS 'Event trigger: tables created in gdp and kpi must carry tenant_id and no user code; they get row-level security and pass to barecount_owner';
CREATE EVENT TRIGGER barecount_guard_store_tables ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE VIEW', 'CREATE MATERIALIZED VIEW', 'CREATE FOREIGN TABLE')
    EXECUTE FUNCTION barecount._guard_store_tables();
COMMENT ON EVENT TRIGGER barecount_guard_store_tables IS 'BareCount: tenant-scope tables created in gdp and kpi';

-- Writes to gdp and kpi outside BareCount (an engineer's UPDATE, a restatement's statement)
-- leave a store_write receipt naming the table, the operation and the statement; BareCount's
-- own writes (model runs, KPI materializations) have receipts of their own.
CREATE FUNCTION barecount._store_write() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._store_write_receipt(TG_RELID::regclass, TG_OP);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION barecount._store_write() IS
    'Statement trigger on gdp and kpi tables: a ledger receipt for every write made outside BareCount''s own sections';

CREATE FUNCTION barecount._record_store_writes(rel regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER barecount_store_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION barecount._store_write()', rel);
    EXECUTE format('COMMENT ON TRIGGER barecount_store_write ON %s IS %L', rel,
                   'BareCount: every write outside BareCount leaves a store_write receipt');
END
$$;
COMMENT ON FUNCTION barecount._record_store_writes(regclass) IS 'Install the store_write receipt trigger on a gdp or kpi table';

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

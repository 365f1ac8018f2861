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

-- As in 0.1.0 (sql/actions.sql), and a suspended tenant's deliveries wait until it is resumed.
CREATE OR REPLACE FUNCTION barecount.gateway_deliveries_claim(worker text, max_deliveries integer DEFAULT 100,
                                                   lease interval DEFAULT '30 seconds')
    RETURNS TABLE (delivery_id bigint, tenant_id text, kind text, config text, webhook_id text, url text, body text, attempt integer,
                   timeout_ms integer, kek_id text, wrapped_dek bytea, secret_ids bigint[], sealed bytea[],
                   auth_secret_id bigint, auth_sealed bytea)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'barecount_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to claim deliveries' USING ERRCODE = '42501',
            HINT = 'The delivery worker connects as a member of barecount_admin.';
    END IF;
    IF worker IS NULL OR worker !~ '^[A-Za-z0-9_.:@-]{1,100}$' THEN
        RAISE EXCEPTION 'gateway_deliveries_claim: worker name % is invalid', coalesce(quote_literal(worker), 'NULL')
            USING ERRCODE = '22023', HINT = '1 to 100 letters, digits or _.:@-';
    END IF;
    IF max_deliveries IS NULL OR max_deliveries < 1 OR max_deliveries > 10000 THEN
        RAISE EXCEPTION 'gateway_deliveries_claim: max_deliveries must be from 1 to 10000, not %', max_deliveries
            USING ERRCODE = '22023';
    END IF;
    IF lease IS NULL OR lease < interval '1 second' OR lease > interval '1 hour' THEN
        RAISE EXCEPTION 'gateway_deliveries_claim: the lease must be from 1 second to 1 hour, not %', lease
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT d.delivery_id FROM barecount.deliveries d
         WHERE d.state = 'pending' AND d.kind IN ('webhook', 'export') AND d.next_attempt_at <= clock_timestamp()
           AND (d.lease_until IS NULL OR d.lease_until < clock_timestamp())
           -- a suspended tenant's deliveries wait (0.2.0)
           AND NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = d.tenant_id AND t.suspended_at IS NOT NULL)
         ORDER BY d.next_attempt_at, d.delivery_id
         LIMIT max_deliveries FOR UPDATE SKIP LOCKED),
    leased AS (
        UPDATE barecount.deliveries d
           SET attempts = d.attempts + 1, lease_until = clock_timestamp() + lease, leased_by = worker
          FROM due WHERE d.delivery_id = due.delivery_id
        RETURNING d.*)
    SELECT l.delivery_id, l.tenant_id, l.kind, a.config::text, l.webhook_id, a.config->>'url', l.payload::text, l.attempts,
           coalesce((a.config->>'timeout_ms')::integer, 10000), k.kek_id, k.wrapped_dek,
           s.ids, s.sealed, c.secret_id, c.sealed
      FROM leased l
      JOIN barecount.actions a ON a.tenant_id = l.tenant_id AND a.name = l.action AND a.version = l.action_version
      LEFT JOIN barecount.tenant_keys k ON k.tenant_id = l.tenant_id
      LEFT JOIN LATERAL (
          SELECT array_agg(x.secret_id ORDER BY x.secret_id DESC) AS ids, array_agg(x.sealed ORDER BY x.secret_id DESC) AS sealed
            FROM barecount.secrets x
           WHERE x.tenant_id = l.tenant_id AND x.purpose = 'signing' AND x.name = l.action
             AND (x.expires_at IS NULL OR x.expires_at > clock_timestamp())) s ON true
      LEFT JOIN LATERAL (
          SELECT x.secret_id, x.sealed FROM barecount.secrets x
           WHERE x.tenant_id = l.tenant_id AND x.purpose = 'credential'
             AND x.name = coalesce(a.config->>'auth_secret', a.config->>'token_secret')
           ORDER BY x.secret_id DESC LIMIT 1) c ON true
     ORDER BY l.delivery_id;
END
$$;
-- Offboarding a tenant ---------------------------------------------------------------------------
-- barecount-flight offboard exports everything of a suspended tenant (Parquet of every
-- published version, its rows of every catalog and raw table as JSON lines, its ledger slice
-- and the chain's digest, a manifest of SHA-256s), then calls tenant_offboard, which checks the
-- manifest against the ledger, writes the final receipt, redacts the tenant's ledger entries
-- (their sequence numbers and hashes stay in ledger_redactions, so the chain still verifies for
-- everyone else) and deletes the tenant's rows everywhere.
CREATE TABLE barecount.ledger_redactions (
    seq             bigint PRIMARY KEY,
    prev_hash       text NOT NULL,
    entry_hash      text NOT NULL UNIQUE,
    redacted_at     timestamptz NOT NULL DEFAULT now(),
    offboarding_seq bigint NOT NULL
);
COMMENT ON TABLE barecount.ledger_redactions IS
    'Ledger entries of offboarded tenants: their contents deleted, their sequence number, previous hash and hash kept so ledger_verify still checks the chain around them; offboarding_seq is the receipt that redacted them';
CREATE TRIGGER ledger_redactions_append_only BEFORE UPDATE OR DELETE ON barecount.ledger_redactions
    FOR EACH ROW EXECUTE FUNCTION barecount._refuse_write('ledger redactions are append-only', 'They stand for deleted entries of the chain.');
CREATE TRIGGER ledger_redactions_no_truncate BEFORE TRUNCATE ON barecount.ledger_redactions
    FOR EACH STATEMENT EXECUTE FUNCTION barecount._refuse_write('ledger redactions are append-only', 'They stand for deleted entries of the chain.');
COMMENT ON TRIGGER ledger_redactions_append_only ON barecount.ledger_redactions IS 'Refuses UPDATE and DELETE: redactions are append-only';
COMMENT ON TRIGGER ledger_redactions_no_truncate ON barecount.ledger_redactions IS 'Refuses TRUNCATE: redactions are append-only';
ALTER TABLE barecount.ledger_redactions OWNER TO barecount_owner;
REVOKE ALL ON barecount.ledger_redactions FROM PUBLIC;
GRANT SELECT ON barecount.ledger_redactions TO barecount_admin;

-- As in 0.1.0 (sql/catalog.sql), with one exception: tenant_offboard deleting a suspended
-- tenant's rows. It runs as barecount_owner (no tenant role can) and names the tenant in a
-- transaction-local setting; only that tenant's rows pass, only for DELETE.
CREATE OR REPLACE FUNCTION barecount._refuse_write() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    AS $$
DECLARE leaving text := nullif(current_setting('barecount.offboarding', true), '');
BEGIN
    IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' AND leaving IS NOT NULL AND current_user = 'barecount_owner'
       AND to_jsonb(OLD) ->> 'tenant_id' = leaving
       AND EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = leaving AND t.suspended_at IS NOT NULL) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% on %.% is not allowed: %', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'modifying_sql_data_not_permitted',
              HINT = coalesce(TG_ARGV[1], 'This object is append-only or immutable by design.');
END
$$;

-- Every table holding tenants' rows (a tenant_id column) in barecount and raw, but the tenants
-- themselves and the ledger, which offboarding treats apart.
CREATE FUNCTION barecount._tenant_tables() RETURNS SETOF regclass
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT c.oid::regclass FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE c.relkind IN ('r', 'p') AND c.relnamespace IN ('barecount'::regnamespace, 'raw'::regnamespace)
       AND NOT c.relispartition
       AND c.oid NOT IN ('barecount.tenants'::regclass, 'barecount.ledger'::regclass)
     ORDER BY c.oid::regclass::text
$$;
COMMENT ON FUNCTION barecount._tenant_tables() IS
    'Internal: every table in barecount and raw with a tenant_id column, but tenants and the ledger';

CREATE FUNCTION barecount.tenant_offboard_check(tenant_id text)
    RETURNS TABLE (relation text, row_count bigint)
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE since timestamptz; pins text; jobs text; seen boolean; r regclass; n bigint; l text;
BEGIN
    PERFORM barecount._require_admin('offboard a tenant');
    SELECT t.suspended_at INTO since FROM barecount.tenants t WHERE t.tenant_id = tenant_offboard_check.tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    IF tenant_id = 'default' THEN
        RAISE EXCEPTION 'the default tenant cannot be offboarded' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF since IS NULL THEN
        RAISE EXCEPTION 'tenant "%" must be suspended before it is offboarded', tenant_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'barecount.tenant_suspend(tenant_id, reason) stops its reads and writes, so the export is complete.';
    END IF;
    SELECT string_agg(format('%s@%s (%s)', p.dataset, p.version, p.holder), ', ' ORDER BY p.dataset, p.version, p.holder) INTO pins
      FROM barecount.dataset_pins p WHERE p.tenant_id = tenant_offboard_check.tenant_id;
    IF pins IS NOT NULL THEN
        RAISE EXCEPTION 'tenant "%" has pinned versions: %', tenant_id, pins
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Their holders depend on them: unpin them (barecount.dataset_unpin) before offboarding.';
    END IF;
    -- pg_cron's jobs belong to the roles that scheduled them, so BareCount cannot remove them;
    -- it can see them all (barecount_owner reads past cron.job's row-level security) and refuses
    -- to leave any behind
    IF EXISTS (SELECT 1 FROM pg_extension x WHERE x.extname = 'pg_cron') THEN
        -- (the table's name resolves only with USAGE on its schema: asked in that order)
        seen := has_schema_privilege('cron', 'USAGE');
        IF seen THEN
            seen := has_table_privilege('cron.job', 'SELECT');
        END IF;
        IF NOT seen THEN
            RAISE EXCEPTION 'tenant "%": pg_cron''s jobs cannot be checked, so offboarding could leave its schedules behind', tenant_id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A superuser runs GRANT USAGE ON SCHEMA cron TO barecount_owner.';
        END IF;
        EXECUTE $q$SELECT string_agg(format('%s (job %s, scheduled by %s)', j.jobname, j.jobid, j.username), ', ' ORDER BY j.jobid)
                     FROM cron.job j
                    WHERE left(j.jobname, length($1)) = $1
                       OR j.username IN (SELECT m.role_name FROM barecount.tenant_members m WHERE m.tenant_id = $2)$q$
            INTO jobs USING 'barecount:' || tenant_id || ':', tenant_id;
        IF jobs IS NOT NULL THEN
            RAISE EXCEPTION 'tenant "%" has pg_cron jobs: %', tenant_id, jobs
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'The role that scheduled each removes it (barecount.pipeline_unschedule(pipeline), or cron.unschedule(job)), or a superuser does, before offboarding.';
        END IF;
    END IF;
    FOR r IN SELECT * FROM barecount._tenant_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id = $1', r) INTO n USING tenant_id;
        IF n > 0 THEN
            relation := r::text; row_count := n; RETURN NEXT;
        END IF;
    END LOOP;
    relation := 'barecount.ledger';
    row_count := (SELECT count(*) FROM barecount.ledger x WHERE x.tenant_id = tenant_offboard_check.tenant_id);
    RETURN NEXT;
    FOREACH l IN ARRAY ARRAY['gdp', 'kpi', 'published'] LOOP
        FOR r IN SELECT c.oid::regclass FROM pg_class c WHERE c.relnamespace = to_regnamespace(l || '_' || tenant_id) AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1 LOOP
            relation := r::text;
            row_count := NULL;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION barecount.tenant_offboard_check(text) IS
    'Admins: what offboarding the tenant will remove (every relation with its rows; the tenant''s own schemas'' relations), or why it cannot yet: not suspended, the default tenant, pinned versions or pg_cron jobs (listed)';

CREATE FUNCTION barecount.tenant_export_rows(tenant_id text) RETURNS TABLE (relation text, row_data jsonb)
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE r regclass;
BEGIN
    PERFORM barecount.tenant_offboard_check(tenant_id);
    RETURN QUERY SELECT 'barecount.tenants', to_jsonb(t) FROM barecount.tenants t WHERE t.tenant_id = tenant_export_rows.tenant_id;
    FOR r IN SELECT * FROM barecount._tenant_tables() LOOP
        -- secrets and keys stay behind: their ciphertexts are useless outside this database, and
        -- token hashes are credentials
        IF r IN ('barecount.secrets'::regclass, 'barecount.tenant_keys'::regclass) THEN
            CONTINUE;
        END IF;
        RETURN QUERY EXECUTE format('SELECT %L::text, to_jsonb(x) - ''salt'' - ''secret_hash'' FROM %s x WHERE tenant_id = $1 ORDER BY 2', r::text, r)
            USING tenant_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION barecount.tenant_export_rows(text) IS
    'Admins (barecount-flight offboard): every row of a suspended tenant in every catalog and raw table, as jsonb (token hashes, secrets and keys left out)';

CREATE FUNCTION barecount.tenant_ledger_slice(tenant_id text)
    RETURNS TABLE (seq bigint, canonical bytea, entry_hash text, prev_hash text)
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount.tenant_offboard_check(tenant_id);
    RETURN QUERY SELECT l.seq, l.canonical, l.entry_hash, l.prev_hash FROM barecount.ledger l
                  WHERE l.tenant_id = tenant_ledger_slice.tenant_id ORDER BY l.seq;
END
$$;
COMMENT ON FUNCTION barecount.tenant_ledger_slice(text) IS
    'Admins (barecount-flight offboard): the tenant''s ledger entries with their canonical bytes and hashes, in order';

-- The slice's fingerprint as the exporter computes it: SHA-256 of the entry hashes, one a line.
CREATE FUNCTION barecount._ledger_slice_sha256(tenant_id text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT encode(sha256(convert_to(coalesce(string_agg(l.entry_hash || E'\n', '' ORDER BY l.seq), ''), 'UTF8')), 'hex')
      FROM barecount.ledger l WHERE l.tenant_id = _ledger_slice_sha256.tenant_id
$$;
COMMENT ON FUNCTION barecount._ledger_slice_sha256(text) IS
    'Internal: SHA-256 of a tenant''s entry hashes in sequence order, each followed by a newline (what the offboarding manifest records)';

CREATE FUNCTION barecount.tenant_offboard(tenant_id text, manifest jsonb) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    counts jsonb := '{}';
    c record;
    entries bigint;
    first_seq bigint;
    last_seq bigint;
    receipt_seq bigint;
    pending regclass[];
    failed regclass[];
    r regclass;
    l text;
    rounds integer := 0;
BEGIN
    FOR c IN SELECT * FROM barecount.tenant_offboard_check(tenant_id) LOOP
        IF c.row_count IS NOT NULL THEN
            counts := counts || jsonb_build_object(c.relation, c.row_count);
        END IF;
    END LOOP;
    IF manifest IS NULL OR jsonb_typeof(manifest) <> 'object' OR manifest ->> 'tenant' IS DISTINCT FROM tenant_id
       OR jsonb_typeof(manifest -> 'files') IS DISTINCT FROM 'array' OR jsonb_array_length(manifest -> 'files') = 0 THEN
        RAISE EXCEPTION 'tenant "%": the manifest is not an export of this tenant', tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Offboard with barecount-flight offboard, which exports first and passes its manifest.';
    END IF;
    SELECT count(*), min(x.seq), max(x.seq) INTO entries, first_seq, last_seq FROM barecount.ledger x WHERE x.tenant_id = tenant_offboard.tenant_id;
    IF (manifest #>> '{ledger,entries}')::bigint IS DISTINCT FROM entries
       OR manifest #>> '{ledger,slice_sha256}' IS DISTINCT FROM barecount._ledger_slice_sha256(tenant_id) THEN
        RAISE EXCEPTION 'tenant "%": the manifest''s ledger slice is not the ledger''s (% entries in the ledger)', tenant_id, entries
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Something changed since the export: export again.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('barecount.offboard/' || tenant_id, 0));
    -- the final receipt first, on the installation's chain: the tail stays a live entry
    receipt_seq := barecount._ledger_append('default', 'tenant_offboard', 'tenant:' || tenant_id,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb,
                           'manifest_sha256', encode(sha256(convert_to(manifest::text, 'UTF8')), 'hex'),
                           'files', jsonb_array_length(manifest -> 'files'),
                           'ledger', jsonb_build_object('entries', entries, 'first_seq', first_seq, 'last_seq', last_seq,
                                                        'slice_sha256', manifest #>> '{ledger,slice_sha256}'),
                           'deleted', counts,
                           -- the login roles stay (the operator's, like every role; they map to
                           -- no tenant now): named so they can be dropped
                           'roles', (SELECT coalesce(jsonb_agg(m.role_name ORDER BY m.role_name), '[]')
                                       FROM barecount.tenant_members m WHERE m.tenant_id = tenant_offboard.tenant_id)));
    -- the ledger: redacted (sequence numbers and hashes kept), then deleted
    INSERT INTO barecount.ledger_redactions (seq, prev_hash, entry_hash, offboarding_seq)
    SELECT x.seq, x.prev_hash, x.entry_hash, receipt_seq FROM barecount.ledger x WHERE x.tenant_id = tenant_offboard.tenant_id;
    -- every other table, children before parents (a table whose rows are still referenced waits
    -- for the next round); their guards (append-only, immutable) let this tenant's rows go
    PERFORM set_config('barecount.offboarding', tenant_id, true);
    SELECT array_agg(t) INTO pending FROM barecount._tenant_tables() t;
    WHILE cardinality(pending) > 0 LOOP
        rounds := rounds + 1;
        failed := '{}';
        FOREACH r IN ARRAY pending LOOP
            BEGIN
                EXECUTE format('DELETE FROM %s WHERE tenant_id = $1', r) USING tenant_id;
            EXCEPTION WHEN foreign_key_violation THEN
                failed := failed || r;
            END;
        END LOOP;
        IF cardinality(failed) = cardinality(pending) OR rounds > 20 THEN
            RAISE EXCEPTION 'tenant "%": rows of % are still referenced', tenant_id, array_to_string(failed, ', ')
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        pending := failed;
    END LOOP;
    DELETE FROM barecount.ledger x WHERE x.tenant_id = tenant_offboard.tenant_id;
    FOREACH l IN ARRAY ARRAY['gdp', 'kpi', 'published'] LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', l || '_' || tenant_id);
    END LOOP;
    PERFORM set_config('barecount.offboarding', '', true);
    DELETE FROM barecount.tenants t WHERE t.tenant_id = tenant_offboard.tenant_id;
    RETURN receipt_seq;
END
$$;
COMMENT ON FUNCTION barecount.tenant_offboard(text, jsonb) IS
    'Admins (barecount-flight offboard, after its export): check the manifest against the tenant''s ledger slice, write the final receipt on the default tenant''s chain, redact the tenant''s ledger entries (hashes kept) and delete its rows everywhere and its schemas; returns the receipt''s sequence number';

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
    SELECT coalesce(o.value, CASE WHEN r.rolled THEN f.rollout_value ELSE f.default_value END),
           CASE WHEN o.value IS NOT NULL THEN 'override'
                WHEN r.listed THEN 'allow-list'
                WHEN r.rolled THEN 'rollout'
                ELSE 'default' END
      FROM (SELECT f.rollout_value IS NOT NULL AND _flag_resolve.tenant_id = ANY (f.rollout_tenants) AS listed,
                   f.rollout_value IS NOT NULL
                   AND (_flag_resolve.tenant_id = ANY (f.rollout_tenants)
                        OR barecount._flag_bucket(f.name, _flag_resolve.tenant_id) < f.rollout_percent) AS rolled) r
      LEFT JOIN barecount.flag_overrides o ON o.tenant_id = _flag_resolve.tenant_id AND o.name = f.name
$$;
COMMENT ON FUNCTION barecount._flag_resolve(barecount.flags, text) IS
    'Internal: a flag''s value for a tenant and its source (override, allow-list, rollout, default)';

CREATE FUNCTION barecount._tenant_required() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount.current_tenant();
BEGIN
    IF t IS NULL THEN
        RAISE EXCEPTION 'this session has no BareCount tenant'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask an administrator to map your role to a tenant.';
    END IF;
    RETURN t;
END
$$;
COMMENT ON FUNCTION barecount._tenant_required() IS
    'Internal: the current tenant, or 42501 for a session of no tenant (or 55000 for a suspended one)';

CREATE FUNCTION barecount.setting(name text) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT (barecount._flag_resolve(barecount._flag_row(name), barecount._tenant_required())).value $$;
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
    RETURN (barecount._flag_resolve(f, barecount._tenant_required())).value::boolean;
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
      FROM barecount.flags f, barecount._tenant_required() t(id),
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

-- The SECURITY DEFINER functions below check their caller's role themselves too, beside the
-- EXECUTE grants: 42501 unless the session's login role holds it (admins hold every role).
CREATE FUNCTION barecount._require_role(role name, action text) RETURNS void
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT (pg_has_role(session_user, role, 'MEMBER') OR barecount._is_admin()) THEN
        RAISE EXCEPTION 'permission denied to %', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Members of %s may do this.', role);
    END IF;
END
$$;
COMMENT ON FUNCTION barecount._require_role(name, text) IS
    'Internal: raises 42501 unless the session''s login role is a member of the role (or an admin)';

-- Master data ----------------------------------------------------------------------------------
-- Reference entities (stores, customers, products...) kept as slowly changing dimensions of
-- type 2: every version of a record with the time it was valid from and to. A version is made
-- only when one of the entity's tracked attributes changes (dbt snapshots' check strategy); a
-- record missing from a full snapshot, or deleted, is end-dated, never removed. Duplicates found
-- by declared match keys are merged into one survivor by a survivorship rule, with a receipt
-- naming every merged record. Rows are checked against the contract of the entity's dataset.
CREATE TABLE barecount.master_entities (
    tenant_id    text NOT NULL REFERENCES barecount.tenants,
    entity       text NOT NULL CHECK (entity ~ '^[a-z][a-z0-9_]{0,62}$'),
    dataset      text NOT NULL,
    key_columns  text[] NOT NULL CHECK (cardinality(key_columns) > 0),
    tracked      text[] NOT NULL CHECK (cardinality(tracked) > 0),
    match_keys   jsonb NOT NULL DEFAULT '[]',
    survivorship jsonb NOT NULL DEFAULT '{"rule": "most_recent"}',
    version      integer NOT NULL DEFAULT 1,
    defined_by   name NOT NULL DEFAULT session_user,
    defined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, entity)
);
COMMENT ON TABLE barecount.master_entities IS
    'Master entities: the contract dataset their rows follow, business key, tracked attributes (a change makes a version), match keys and survivorship rule for merging duplicates';
CREATE TABLE barecount.master_records (
    tenant_id       text NOT NULL,
    entity          text NOT NULL,
    record_key      text NOT NULL,
    version         integer NOT NULL,
    attributes      jsonb NOT NULL,
    tracked_sha256  text NOT NULL,
    source          text,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    is_current      boolean GENERATED ALWAYS AS (valid_to IS NULL) STORED,
    change          text NOT NULL CHECK (change IN ('insert', 'update', 'merge')),
    ended_by        text CHECK (ended_by IN ('update', 'delete', 'merge')),
    merged_into     text,
    ledger_seq      bigint NOT NULL,
    PRIMARY KEY (tenant_id, entity, record_key, version),
    FOREIGN KEY (tenant_id, entity) REFERENCES barecount.master_entities,
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE UNIQUE INDEX master_records_current ON barecount.master_records (tenant_id, entity, record_key) WHERE valid_to IS NULL;
CREATE INDEX master_records_valid_from ON barecount.master_records (tenant_id, entity, valid_from);
COMMENT ON TABLE barecount.master_records IS
    'Every version of every master record (SCD type 2): attributes, valid_from/valid_to, is_current, how it began and ended, the receipt that wrote it';
ALTER TABLE barecount.master_entities OWNER TO barecount_owner;
ALTER TABLE barecount.master_records OWNER TO barecount_owner;
REVOKE ALL ON barecount.master_entities, barecount.master_records FROM PUBLIC;
GRANT SELECT ON barecount.master_entities, barecount.master_records TO barecount_engineer, barecount_publisher;
SELECT barecount._protect_table(t::regclass)
  FROM unnest(ARRAY['barecount.master_entities', 'barecount.master_records']) t;

CREATE FUNCTION barecount._master_entity(entity text, tenant_id text, lock boolean) RETURNS barecount.master_entities
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE e barecount.master_entities;
BEGIN
    SELECT * INTO e FROM barecount.master_entities m WHERE m.tenant_id = _master_entity.tenant_id AND m.entity = _master_entity.entity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'master entity "%" does not exist', entity
            USING ERRCODE = 'undefined_object',
                  HINT = 'Define it with barecount.master_define(entity, dataset, key_columns, tracked).';
    END IF;
    IF lock THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('barecount.master/' || tenant_id || '/' || entity, 0));
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION barecount._master_entity(text, text, boolean) IS
    'Internal: a master entity of the tenant (42704 if none), locked for the transaction when asked';

-- The business key of a row: its key columns' values as text, joined by '|' (NULL if one is missing).
CREATE FUNCTION barecount._master_key(keys text[], doc jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN bool_and(doc ? k AND jsonb_typeof(doc -> k) <> 'null')
                THEN string_agg(doc ->> k, '|' ORDER BY o) END
      FROM unnest(keys) WITH ORDINALITY u(k, o)
$$;
COMMENT ON FUNCTION barecount._master_key(text[], jsonb) IS
    'Internal: a master row''s business key (its key columns as text joined by |), NULL if one is missing';

CREATE FUNCTION barecount._master_tracked_sha256(tracked text[], doc jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT encode(sha256(convert_to(coalesce(jsonb_object_agg(t, doc -> t), '{}'::jsonb)::text, 'UTF8')), 'hex')
      FROM unnest(tracked) t
$$;
COMMENT ON FUNCTION barecount._master_tracked_sha256(text[], jsonb) IS
    'Internal: SHA-256 of a row''s tracked attributes (absent and null alike), what change detection compares';

CREATE FUNCTION barecount.master_define(entity text, dataset text, key_columns text[], tracked text[],
                                        match_keys jsonb DEFAULT '[]', survivorship jsonb DEFAULT '{"rule": "most_recent"}')
    RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t text := barecount._tenant_required();
    e barecount.master_entities;
    rule text;
    bad text;
    seq bigint;
BEGIN
    PERFORM barecount._require_role('barecount_engineer', 'define a master entity');
    IF entity IS NULL OR entity !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'master entity name "%" is not valid', entity USING ERRCODE = 'invalid_name',
            HINT = 'Lower-case letters, digits and underscores, starting with a letter, at most 63 long.';
    END IF;
    IF dataset IS NULL OR NOT EXISTS (SELECT 1 FROM barecount.contract_datasets c WHERE c.tenant_id = t AND c.dataset = master_define.dataset) THEN
        RAISE EXCEPTION 'master entity "%": no contract governs dataset "%"', entity, dataset USING ERRCODE = 'undefined_object',
            HINT = 'Register a contract for the dataset first (barecount.contract_register); its rows are checked against it.';
    END IF;
    IF key_columns IS NULL OR cardinality(key_columns) = 0 OR array_position(key_columns, NULL) IS NOT NULL
       OR tracked IS NULL OR cardinality(tracked) = 0 OR array_position(tracked, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'master entity "%": key_columns and tracked must each name at least one attribute', entity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO bad FROM unnest(key_columns || tracked) k WHERE k !~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$' LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'master entity "%": "%" is not an attribute name', entity, bad USING ERRCODE = 'invalid_name';
    END IF;
    IF match_keys IS NULL OR jsonb_typeof(match_keys) <> 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(match_keys) m
                   WHERE jsonb_typeof(m) <> 'array' OR jsonb_array_length(m) = 0
                      OR EXISTS (SELECT 1 FROM jsonb_array_elements(m) a WHERE jsonb_typeof(a) <> 'string')) THEN
        RAISE EXCEPTION 'master entity "%": match_keys must be an array of non-empty arrays of attribute names', entity
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. ''[["email"], ["name", "postcode"]]'': records equal on every attribute of one list (case and spaces ignored) are duplicates.';
    END IF;
    rule := survivorship ->> 'rule';
    IF survivorship IS NULL OR jsonb_typeof(survivorship) <> 'object' OR rule IS NULL
       OR rule NOT IN ('most_recent', 'most_complete', 'source_priority')
       OR (SELECT count(*) FROM jsonb_object_keys(survivorship) k WHERE k NOT IN ('rule', 'sources')) > 0
       OR (rule = 'source_priority' AND (jsonb_typeof(survivorship -> 'sources') IS DISTINCT FROM 'array'
                                         OR jsonb_array_length(survivorship -> 'sources') = 0)) THEN
        RAISE EXCEPTION 'master entity "%": survivorship % is not valid', entity, coalesce(survivorship::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '{"rule": "most_recent"}, {"rule": "most_complete"} or {"rule": "source_priority", "sources": ["erp", "crm"]}.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('barecount.master/' || t || '/' || entity, 0));
    SELECT * INTO e FROM barecount.master_entities m WHERE m.tenant_id = t AND m.entity = master_define.entity;
    IF FOUND THEN
        IF e.dataset = dataset AND e.key_columns = key_columns AND e.tracked = tracked
           AND e.match_keys = match_keys AND e.survivorship = survivorship THEN
            RETURN e.version;
        END IF;
        IF e.key_columns <> key_columns AND EXISTS (SELECT 1 FROM barecount.master_records r WHERE r.tenant_id = t AND r.entity = master_define.entity) THEN
            RAISE EXCEPTION 'master entity "%" has records: its key columns cannot change', entity
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Define a new entity for the new key.';
        END IF;
        UPDATE barecount.master_entities m SET dataset = master_define.dataset, key_columns = master_define.key_columns,
               tracked = master_define.tracked, match_keys = master_define.match_keys, survivorship = master_define.survivorship,
               version = m.version + 1, defined_by = session_user, defined_at = now()
         WHERE m.tenant_id = t AND m.entity = master_define.entity RETURNING * INTO e;
    ELSE
        INSERT INTO barecount.master_entities AS m (tenant_id, entity, dataset, key_columns, tracked, match_keys, survivorship)
        VALUES (t, entity, dataset, key_columns, tracked, match_keys, survivorship) RETURNING * INTO e;
    END IF;
    seq := barecount._ledger_append(t, 'master_define', 'master:' || entity || '@' || e.version,
        jsonb_build_object('inputs', jsonb_build_array('contract-dataset:' || dataset), 'outputs', '[]'::jsonb,
                           'key_columns', to_jsonb(key_columns), 'tracked', to_jsonb(tracked),
                           'match_keys', match_keys, 'survivorship', survivorship));
    RETURN e.version;
END
$$;
COMMENT ON FUNCTION barecount.master_define(text, text, text[], text[], jsonb, jsonb) IS
    'Engineers: define a master entity of the tenant over a contract dataset: business key, tracked attributes (a change makes a new version), match keys and survivorship rule (most_recent, most_complete, source_priority); the same definition again is a no-op; a receipt per version';

CREATE FUNCTION barecount.master_upsert(entity text, rows jsonb, source text DEFAULT NULL,
                                        as_of timestamptz DEFAULT now(), full_snapshot boolean DEFAULT false)
    RETURNS TABLE (inserted integer, updated integer, unchanged integer, ended integer, ledger_seq bigint)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t text := barecount._tenant_required();
    e barecount.master_entities;
    r record;
    err record;
    cur barecount.master_records;
    n_ins integer := 0; n_upd integer := 0; n_same integer := 0; n_end integer := 0;
    seq bigint;
    latest timestamptz;
    k text;
    h text;
BEGIN
    PERFORM barecount._require_role('barecount_engineer', 'write master data');
    e := barecount._master_entity(entity, t, true);
    IF rows IS NULL OR jsonb_typeof(rows) <> 'array' THEN
        RAISE EXCEPTION 'master entity "%": rows must be a JSON array of objects', entity USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF as_of IS NULL OR full_snapshot IS NULL THEN
        RAISE EXCEPTION 'master entity "%": as_of and full_snapshot must not be NULL', entity USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF source IS NOT NULL AND source !~ '^[A-Za-z0-9_.:-]{1,63}$' THEN
        RAISE EXCEPTION 'master entity "%": source "%" is not valid', entity, source USING ERRCODE = 'invalid_parameter_value',
            HINT = '1 to 63 letters, digits or _.:-';
    END IF;
    -- history is never rewritten: a change is dated at or after everything recorded
    SELECT max(greatest(m.valid_from, m.valid_to)) INTO latest FROM barecount.master_records m WHERE m.tenant_id = t AND m.entity = e.entity;
    IF latest IS NOT NULL AND as_of < latest THEN
        RAISE EXCEPTION 'master entity "%": as_of % is before its latest change (%)', entity, as_of, latest
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Changes are recorded in time order; history is not rewritten.';
    END IF;
    -- every row checked before anything is written: objects, a full key, the contract
    FOR r IN SELECT value AS item, ordinality AS n FROM jsonb_array_elements(rows) WITH ORDINALITY LOOP
        IF jsonb_typeof(r.item) <> 'object' THEN
            RAISE EXCEPTION 'master entity "%": row % is not a JSON object', entity, r.n USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF barecount._master_key(e.key_columns, r.item) IS NULL THEN
            RAISE EXCEPTION 'master entity "%": row % lacks a key column (%)', entity, r.n, array_to_string(e.key_columns, ', ')
                USING ERRCODE = 'not_null_violation';
        END IF;
        SELECT * INTO err FROM barecount.validation_errors(e.dataset, r.item) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'master entity "%": row % breaks the contract of "%" at %: %', entity, r.n, e.dataset,
                            coalesce(nullif(err.instance_path, ''), '/'), err.message
                USING ERRCODE = 'check_violation',
                      HINT = 'barecount.validation_errors(dataset, row) lists every error; nothing of this call was written.';
        END IF;
    END LOOP;
    SELECT k2 INTO k FROM (SELECT barecount._master_key(e.key_columns, v) AS k2 FROM jsonb_array_elements(rows) v) x
     GROUP BY k2 HAVING count(*) > 1 LIMIT 1;
    IF k IS NOT NULL THEN
        RAISE EXCEPTION 'master entity "%": key "%" appears more than once in one call', entity, k
            USING ERRCODE = 'unique_violation';
    END IF;
    -- the receipt first: every version written by this call points at it
    seq := barecount._ledger_append(t, 'master_upsert', 'master:' || entity,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', jsonb_build_array('master:' || entity),
                           'rows', jsonb_array_length(rows), 'source', source, 'as_of', as_of,
                           'full_snapshot', full_snapshot,
                           'rows_sha256', encode(sha256(convert_to(rows::text, 'UTF8')), 'hex')));
    FOR r IN SELECT value AS item FROM jsonb_array_elements(rows) LOOP
        k := barecount._master_key(e.key_columns, r.item);
        h := barecount._master_tracked_sha256(e.tracked, r.item);
        SELECT * INTO cur FROM barecount.master_records m
         WHERE m.tenant_id = t AND m.entity = e.entity AND m.record_key = k AND m.valid_to IS NULL FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO barecount.master_records (tenant_id, entity, record_key, version, attributes, tracked_sha256, source, valid_from, change, ledger_seq)
            VALUES (t, e.entity, k, coalesce((SELECT max(m.version) FROM barecount.master_records m
                                               WHERE m.tenant_id = t AND m.entity = e.entity AND m.record_key = k), 0) + 1,
                    r.item, h, source, as_of, 'insert', seq);
            n_ins := n_ins + 1;
        ELSIF cur.tracked_sha256 = h THEN
            n_same := n_same + 1;
        ELSE
            UPDATE barecount.master_records m SET valid_to = as_of, ended_by = 'update'
             WHERE m.tenant_id = t AND m.entity = e.entity AND m.record_key = k AND m.version = cur.version;
            INSERT INTO barecount.master_records (tenant_id, entity, record_key, version, attributes, tracked_sha256, source, valid_from, change, ledger_seq)
            VALUES (t, e.entity, k, cur.version + 1, r.item, h, source, as_of, 'update', seq);
            n_upd := n_upd + 1;
        END IF;
    END LOOP;
    IF full_snapshot THEN
        UPDATE barecount.master_records m SET valid_to = as_of, ended_by = 'delete'
         WHERE m.tenant_id = t AND m.entity = e.entity AND m.valid_to IS NULL
           AND m.record_key NOT IN (SELECT barecount._master_key(e.key_columns, v) FROM jsonb_array_elements(rows) v);
        GET DIAGNOSTICS n_end = ROW_COUNT;
    END IF;
    RETURN QUERY SELECT n_ins, n_upd, n_same, n_end, seq;
END
$$;
COMMENT ON FUNCTION barecount.master_upsert(text, jsonb, text, timestamptz, boolean) IS
    'Engineers: upsert rows of a master entity as of a time (default now): each row checked against the contract, a new version only when a tracked attribute changed, the current one end-dated; full_snapshot end-dates records the rows lack (deletes); all or nothing, one receipt';

CREATE FUNCTION barecount.master_end(entity text, record_key text, as_of timestamptz DEFAULT now())
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required(); e barecount.master_entities; cur barecount.master_records;
BEGIN
    PERFORM barecount._require_role('barecount_engineer', 'write master data');
    e := barecount._master_entity(entity, t, true);
    SELECT * INTO cur FROM barecount.master_records m
     WHERE m.tenant_id = t AND m.entity = e.entity AND m.record_key = master_end.record_key AND m.valid_to IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF as_of IS NULL OR as_of < cur.valid_from THEN
        RAISE EXCEPTION 'master record %/%: as_of % is before its current version began (%)', entity, record_key, as_of, cur.valid_from
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE barecount.master_records m SET valid_to = as_of, ended_by = 'delete'
     WHERE m.tenant_id = t AND m.entity = e.entity AND m.record_key = cur.record_key AND m.version = cur.version;
    PERFORM barecount._ledger_append(t, 'master_end', 'master:' || entity || '/' || record_key,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', jsonb_build_array('master:' || entity),
                           'version', cur.version, 'as_of', as_of));
    RETURN true;
END
$$;
COMMENT ON FUNCTION barecount.master_end(text, text, timestamptz) IS
    'Engineers: delete a master record by end-dating its current version (history kept); false if it had none; a receipt';

CREATE FUNCTION barecount.master_merge(entity text, as_of timestamptz DEFAULT now())
    RETURNS TABLE (survivor text, merged text[], version integer, ledger_seq bigint)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t text := barecount._tenant_required();
    e barecount.master_entities;
    mk jsonb;
    g record;
    members barecount.master_records[];
    win barecount.master_records;
    attrs jsonb;
    m barecount.master_records;
    a text;
    seq bigint;
    v integer;
    rule text;
    latest timestamptz;
BEGIN
    PERFORM barecount._require_role('barecount_engineer', 'merge master data');
    e := barecount._master_entity(entity, t, true);
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'master entity "%": as_of must not be NULL', entity USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT max(greatest(r.valid_from, r.valid_to)) INTO latest FROM barecount.master_records r WHERE r.tenant_id = t AND r.entity = e.entity;
    IF latest IS NOT NULL AND as_of < latest THEN
        RAISE EXCEPTION 'master entity "%": as_of % is before its latest change (%)', entity, as_of, latest
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    rule := e.survivorship ->> 'rule';
    FOR mk IN SELECT value FROM jsonb_array_elements(e.match_keys) LOOP
        -- current records equal on every attribute of the match key, case and spaces ignored
        FOR g IN
            SELECT array_agg(r ORDER BY r.record_key) AS recs
              FROM barecount.master_records r,
                   LATERAL (SELECT string_agg(lower(btrim(r.attributes ->> k)), chr(31) ORDER BY o) AS mv,
                                   bool_and(nullif(btrim(r.attributes ->> k), '') IS NOT NULL) AS full
                              FROM jsonb_array_elements_text(mk) WITH ORDINALITY x(k, o)) key
             WHERE r.tenant_id = t AND r.entity = e.entity AND r.valid_to IS NULL AND key.full
             GROUP BY key.mv HAVING count(*) > 1
        LOOP
            members := g.recs;
            -- the survivor by the rule; ties go to the most recent, then the lowest key
            SELECT x.* INTO win FROM unnest(members) x
             ORDER BY CASE rule WHEN 'most_complete' THEN
                           -(SELECT count(*) FROM jsonb_each(x.attributes) kv WHERE jsonb_typeof(kv.value) <> 'null'
                                                                             AND kv.value <> '""'::jsonb)
                      ELSE 0 END,
                      CASE rule WHEN 'source_priority' THEN
                           coalesce((SELECT o FROM jsonb_array_elements_text(e.survivorship -> 'sources') WITH ORDINALITY s(src, o)
                                      WHERE s.src = x.source), 2147483647)
                      ELSE 0 END,
                      x.valid_from DESC, x.record_key
             LIMIT 1;
            -- attributes: the survivor's, each one it lacks filled from the others in the same order
            attrs := win.attributes;
            FOR m IN SELECT x.* FROM unnest(members) x
                      WHERE x.record_key <> win.record_key
                      ORDER BY CASE rule WHEN 'source_priority' THEN
                                   coalesce((SELECT o FROM jsonb_array_elements_text(e.survivorship -> 'sources') WITH ORDINALITY s(src, o)
                                              WHERE s.src = x.source), 2147483647) ELSE 0 END,
                               x.valid_from DESC, x.record_key LOOP
                FOR a IN SELECT key FROM jsonb_each(m.attributes) LOOP
                    IF (NOT attrs ? a OR jsonb_typeof(attrs -> a) = 'null' OR attrs -> a = '""'::jsonb)
                       AND jsonb_typeof(m.attributes -> a) <> 'null' AND NOT a = ANY (e.key_columns) THEN
                        attrs := attrs || jsonb_build_object(a, m.attributes -> a);
                    END IF;
                END LOOP;
            END LOOP;
            seq := barecount._ledger_append(t, 'master_merge', 'master:' || e.entity || '/' || win.record_key,
                jsonb_build_object(
                    'inputs', (SELECT jsonb_agg('master:' || e.entity || '/' || x.record_key || '@' || x.version ORDER BY x.record_key) FROM unnest(members) x),
                    'outputs', jsonb_build_array('master:' || e.entity || '/' || win.record_key),
                    'rule', e.survivorship, 'match_key', mk, 'as_of', as_of));
            UPDATE barecount.master_records r SET valid_to = as_of, ended_by = 'merge', merged_into = win.record_key
             WHERE r.tenant_id = t AND r.entity = e.entity AND r.valid_to IS NULL
               AND r.record_key IN (SELECT x.record_key FROM unnest(members) x WHERE x.record_key <> win.record_key);
            v := win.version;
            IF attrs <> win.attributes THEN
                UPDATE barecount.master_records r SET valid_to = as_of, ended_by = 'update'
                 WHERE r.tenant_id = t AND r.entity = e.entity AND r.record_key = win.record_key AND r.version = win.version;
                v := win.version + 1;
                INSERT INTO barecount.master_records (tenant_id, entity, record_key, version, attributes, tracked_sha256, source, valid_from, change, ledger_seq)
                VALUES (t, e.entity, win.record_key, v, attrs, barecount._master_tracked_sha256(e.tracked, attrs), win.source, as_of, 'merge', seq);
            END IF;
            survivor := win.record_key;
            merged := (SELECT array_agg(x.record_key ORDER BY x.record_key) FROM unnest(members) x WHERE x.record_key <> win.record_key);
            version := v;
            ledger_seq := seq;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION barecount.master_merge(text, timestamptz) IS
    'Engineers: merge duplicate current records (equal on a match key, case and spaces ignored) into one survivor by the entity''s survivorship rule, filling its missing attributes from the others; the others are end-dated with merged_into; a receipt per merge naming every record';

CREATE FUNCTION barecount.master_as_of(entity text, at timestamptz DEFAULT now())
    RETURNS TABLE (record_key text, attributes jsonb, version integer, valid_from timestamptz, valid_to timestamptz, source text)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM barecount.master_entities m WHERE m.tenant_id = t AND m.entity = master_as_of.entity) THEN
        RAISE EXCEPTION 'master entity "%" does not exist', entity USING ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY SELECT r.record_key, r.attributes, r.version, r.valid_from, r.valid_to, r.source
                   FROM barecount.master_records r
                  WHERE r.tenant_id = t AND r.entity = master_as_of.entity
                    AND r.valid_from <= at AND (r.valid_to IS NULL OR r.valid_to > at)
                  ORDER BY r.record_key;
END
$$;
COMMENT ON FUNCTION barecount.master_as_of(text, timestamptz) IS
    'The master records of an entity as they were at a time (default now): one row per record valid then';

CREATE FUNCTION barecount.master_history(entity text)
    RETURNS TABLE (record_key text, version integer, attributes jsonb, valid_from timestamptz, valid_to timestamptz,
                   is_current boolean, change text, ended_by text, merged_into text, source text, ledger_seq bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM barecount.master_entities m WHERE m.tenant_id = t AND m.entity = master_history.entity) THEN
        RAISE EXCEPTION 'master entity "%" does not exist', entity USING ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY SELECT r.record_key, r.version, r.attributes, r.valid_from, r.valid_to, r.is_current, r.change,
                        r.ended_by, r.merged_into, r.source, r.ledger_seq
                   FROM barecount.master_records r
                  WHERE r.tenant_id = t AND r.entity = master_history.entity
                  ORDER BY r.record_key, r.version;
END
$$;
COMMENT ON FUNCTION barecount.master_history(text) IS
    'Every version of every record of a master entity (the join helper: facts join the version whose [valid_from, valid_to) holds their date)';

CREATE FUNCTION barecount.master_at(entity text, record_key text, at timestamptz)
    RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT r.attributes FROM barecount.master_records r
     WHERE r.tenant_id = barecount._tenant_required() AND r.entity = master_at.entity AND r.record_key = master_at.record_key
       AND r.valid_from <= master_at.at AND (r.valid_to IS NULL OR r.valid_to > master_at.at)
$$;
COMMENT ON FUNCTION barecount.master_at(text, text, timestamptz) IS
    'A master record''s attributes as they were at a time, NULL if it was not valid then (for a fact: master_at(''stores'', store_id, order_date))';

-- Policies (Cedar) -----------------------------------------------------------------------------
-- Per tenant, versioned documents of Cedar policies, validated against BareCount's schema when
-- they are registered (core/src/policy.rs has the schema and the decision model: a deny-list
-- with obligations). They decide at ingest and publish (in SQL, as the caller), at export and
-- read over Flight and at delivery (through the gateway); every decision under policies is a
-- receipt. The two Rust functions are declared here, not by pgrx (their Rust side says
-- `sql = false`), so both install paths create them the same way.
CREATE FUNCTION barecount._policy_parse(name text, body text) RETURNS integer
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', '_policy_parse_wrapper';
COMMENT ON FUNCTION barecount._policy_parse(text, text) IS
    'Internal: parse and validate a Cedar policy document against BareCount''s schema; its number of statements, or the first error with line and column (42601 syntax, 42703 unknown attribute, 42704 unknown entity type or action, 42804 type error, 0A000 templates)';
CREATE FUNCTION barecount._policy_decide(documents jsonb, request jsonb) RETURNS jsonb
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', '_policy_decide_wrapper';
COMMENT ON FUNCTION barecount._policy_decide(jsonb, jsonb) IS
    'Internal: decide a request under policy documents: {allow, policies, reasons, obligations, errors}';
-- A denial raises an error, which rolls back the transaction and its receipts: this one appends
-- its receipt in a background worker's transaction of its own (govern/autonomous.rs).
CREATE FUNCTION barecount._ledger_append_autonomous(tenant_id text, event_type text, subject text, inputs jsonb)
    RETURNS bigint
    VOLATILE STRICT PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', '_ledger_append_autonomous_wrapper';
COMMENT ON FUNCTION barecount._ledger_append_autonomous(text, text, text, jsonb) IS
    'Internal (denials): append a receipt in a transaction of its own, a background worker''s, committed whatever becomes of the caller''s: its sequence number; 0 when the caller holds the ledger''s append lock (appended as soon as the caller''s transaction ends); the receipts of one transaction''s denials share one worker; NULL when no worker could be started, it failed, or the transaction''s denials overflow their segment. For barecount_owner only';

-- Who registered, ingested or published: the login role (as the ledger's actor), not the role
-- BareCount's privileged sections run as (0.1.0 recorded barecount_owner; those rows stay)
ALTER TABLE barecount.contracts ALTER COLUMN registered_by SET DEFAULT session_user;
ALTER TABLE barecount.batches ALTER COLUMN ingested_by SET DEFAULT session_user;
ALTER TABLE barecount.dataset_versions ALTER COLUMN published_by SET DEFAULT session_user;

CREATE TABLE barecount.policies (
    tenant_id   text NOT NULL REFERENCES barecount.tenants,
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    version     integer NOT NULL,
    body        text NOT NULL,
    body_sha256 text NOT NULL,
    statements  integer NOT NULL,
    active      boolean NOT NULL,
    defined_by  name NOT NULL DEFAULT session_user,
    defined_at  timestamptz NOT NULL DEFAULT now(),
    ledger_seq  bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.policies IS
    'Cedar policy documents per tenant, every version kept; the latest version of each name decides while active';
CREATE TABLE barecount.dataset_tags (
    tenant_id text NOT NULL REFERENCES barecount.tenants,
    dataset   text NOT NULL,
    tags      text[] NOT NULL,
    set_by    name NOT NULL DEFAULT session_user,
    set_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dataset)
);
COMMENT ON TABLE barecount.dataset_tags IS
    'Tags of a dataset (pii, finance, ...) that policies see as resource.tags, beside its contract''s tags';
ALTER TABLE barecount.policies OWNER TO barecount_owner;
ALTER TABLE barecount.dataset_tags OWNER TO barecount_owner;
REVOKE ALL ON barecount.policies, barecount.dataset_tags FROM PUBLIC;
GRANT SELECT ON barecount.policies, barecount.dataset_tags TO barecount_engineer, barecount_publisher;
SELECT barecount._protect_table(t::regclass) FROM unnest(ARRAY['barecount.policies', 'barecount.dataset_tags']) t;

CREATE FUNCTION barecount.policy_define(name text, body text) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required(); cur barecount.policies; n integer; v integer; seq bigint; h text;
BEGIN
    PERFORM barecount._require_admin('define a policy');
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'policy name "%" is not valid', name USING ERRCODE = 'invalid_name',
            HINT = 'Lower-case letters, digits, _ and -, starting with a letter, at most 63 long.';
    END IF;
    IF body IS NULL THEN
        RAISE EXCEPTION 'policy "%": a body is required', name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    n := barecount._policy_parse(name, body);
    h := encode(sha256(convert_to(body, 'UTF8')), 'hex');
    PERFORM pg_advisory_xact_lock(hashtextextended('barecount.policy/' || t || '/' || name, 0));
    SELECT * INTO cur FROM barecount.policies p WHERE p.tenant_id = t AND p.name = policy_define.name ORDER BY p.version DESC LIMIT 1;
    IF FOUND AND cur.body_sha256 = h AND cur.active THEN
        RETURN cur.version;
    END IF;
    v := coalesce(cur.version, 0) + 1;
    seq := barecount._ledger_append(t, 'policy_define', 'policy:' || name || '@' || v,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'body_sha256', h, 'statements', n, 'body', body));
    INSERT INTO barecount.policies (tenant_id, name, version, body, body_sha256, statements, active, ledger_seq)
    VALUES (t, name, v, body, h, n, true, seq);
    RETURN v;
END
$$;
COMMENT ON FUNCTION barecount.policy_define(text, text) IS
    'Admins (acting as the tenant): register a Cedar policy document, validated against BareCount''s schema (an error names its line and column); the same body again is a no-op; returns the version; a receipt per version';

CREATE FUNCTION barecount.policy_disable(name text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required(); cur barecount.policies; seq bigint;
BEGIN
    PERFORM barecount._require_admin('disable a policy');
    PERFORM pg_advisory_xact_lock(hashtextextended('barecount.policy/' || t || '/' || coalesce(name, ''), 0));
    SELECT * INTO cur FROM barecount.policies p WHERE p.tenant_id = t AND p.name = policy_disable.name ORDER BY p.version DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'policy "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT cur.active THEN
        RETURN false;
    END IF;
    seq := barecount._ledger_append(t, 'policy_disable', 'policy:' || name || '@' || (cur.version + 1),
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'body_sha256', cur.body_sha256));
    INSERT INTO barecount.policies (tenant_id, name, version, body, body_sha256, statements, active, ledger_seq)
    VALUES (t, cur.name, cur.version + 1, cur.body, cur.body_sha256, cur.statements, false, seq);
    RETURN true;
END
$$;
COMMENT ON FUNCTION barecount.policy_disable(text) IS
    'Admins (acting as the tenant): a new version of the policy that no longer decides; false if it already did not; a receipt';

CREATE FUNCTION barecount.dataset_tags_set(dataset text, tags text[]) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required(); old text[]; bad text;
BEGIN
    PERFORM barecount._require_role('barecount_publisher', 'tag datasets');
    IF dataset IS NULL OR dataset !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'dataset name "%" is not valid', dataset USING ERRCODE = 'invalid_name';
    END IF;
    SELECT x INTO bad FROM unnest(coalesce(tags, '{}')) x WHERE x IS NULL OR x !~ '^[a-z][a-z0-9_:-]{0,62}$' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tag "%" is not valid', bad USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Lower-case letters, digits and _:-, starting with a letter, at most 63 long.';
    END IF;
    tags := coalesce((SELECT array_agg(DISTINCT x ORDER BY x) FROM unnest(tags) x), '{}');
    SELECT d.tags INTO old FROM barecount.dataset_tags d WHERE d.tenant_id = t AND d.dataset = dataset_tags_set.dataset FOR UPDATE;
    IF old IS NOT DISTINCT FROM tags OR (old IS NULL AND tags = '{}') THEN
        RETURN false;
    END IF;
    INSERT INTO barecount.dataset_tags AS d (tenant_id, dataset, tags) VALUES (t, dataset, tags)
    ON CONFLICT ON CONSTRAINT dataset_tags_pkey DO UPDATE SET tags = EXCLUDED.tags, set_by = session_user, set_at = now();
    PERFORM barecount._ledger_append(t, 'dataset_tags', 'dataset:' || dataset,
        jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'from', to_jsonb(old), 'to', to_jsonb(tags)));
    RETURN true;
END
$$;
COMMENT ON FUNCTION barecount.dataset_tags_set(text, text[]) IS
    'Publishers: set a dataset''s tags (pii, finance, ...) that policies see as resource.tags; false when unchanged; a receipt';

-- The request a decision is made on: the principal's BareCount roles (or a token's scopes), the
-- dataset's tags (its own and its contract's), layer and contract, and the context with the
-- time filled in.
CREATE FUNCTION barecount._policy_request(tenant_id text, principal text, action text, resource text, context jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE roles text[]; tags text[]; contract text := ''; contract_version text := ''; doc jsonb := '{}'; owners text[];
        layer text := 'raw'; attrs jsonb; now_utc timestamp := now() AT TIME ZONE 'UTC';
BEGIN
    IF action IS NULL OR action NOT IN ('ingest', 'publish', 'export', 'read', 'deliver') THEN
        RAISE EXCEPTION 'unknown action "%"', action USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Policies decide ingest, publish, export, read and deliver.';
    END IF;
    IF context IS NOT NULL AND jsonb_typeof(context) <> 'object' THEN
        RAISE EXCEPTION 'the context must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF principal LIKE 'token:%' THEN
        SELECT k.scopes INTO roles FROM barecount.tokens k WHERE k.token_id = substr(principal, 7) AND k.tenant_id = _policy_request.tenant_id;
    ELSE
        SELECT array_agg(substr(r, 11) ORDER BY r) INTO roles
          FROM unnest(ARRAY['barecount_reader', 'barecount_engineer', 'barecount_publisher', 'barecount_admin']) r
         WHERE to_regrole(principal) IS NOT NULL AND pg_has_role(principal, r, 'MEMBER');
    END IF;
    IF action = 'deliver' THEN
        attrs := jsonb_build_object('kind', coalesce((SELECT a.kind FROM barecount.actions a WHERE a.tenant_id = _policy_request.tenant_id
                                                        AND a.name = resource ORDER BY a.version DESC LIMIT 1), ''),
                                    'host', coalesce((SELECT substring(a.config ->> 'url' FROM '^[a-z]+://([^/:?#]+)') FROM barecount.actions a
                                                      WHERE a.tenant_id = _policy_request.tenant_id AND a.name = resource
                                                      ORDER BY a.version DESC LIMIT 1), ''));
    ELSE
        SELECT c.contract, c.version, c.document,
               ARRAY(SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(c.document -> 'tags') = 'array' THEN c.document -> 'tags' ELSE '[]' END))
          INTO contract, contract_version, doc, tags
          FROM barecount.contract_datasets cd JOIN barecount.contracts c
            ON c.tenant_id = cd.tenant_id AND c.contract = cd.contract AND c.version = cd.contract_version
         WHERE cd.tenant_id = _policy_request.tenant_id AND cd.dataset = resource
         ORDER BY c.version_sort DESC LIMIT 1;
        doc := coalesce(doc, '{}');
        IF EXISTS (SELECT 1 FROM barecount.datasets d WHERE d.tenant_id = _policy_request.tenant_id AND d.dataset = resource) THEN
            layer := 'published';
        END IF;
        tags := ARRAY(SELECT DISTINCT x FROM unnest(coalesce(tags, '{}') || coalesce((SELECT d.tags FROM barecount.dataset_tags d
                       WHERE d.tenant_id = _policy_request.tenant_id AND d.dataset = resource), '{}')) x ORDER BY x);
        -- owners: the contract's team (ODCS: a name, a list of members, or an object with a name
        -- and members; a member by username or name) and the login role that published the
        -- latest version
        owners := ARRAY(SELECT DISTINCT o FROM (
            SELECT CASE jsonb_typeof(m) WHEN 'string' THEN m #>> '{}' WHEN 'object' THEN coalesce(m ->> 'username', m ->> 'name') END AS o
              FROM jsonb_array_elements(CASE jsonb_typeof(doc -> 'team')
                                          WHEN 'string' THEN jsonb_build_array(doc -> 'team')
                                          WHEN 'array' THEN doc -> 'team'
                                          WHEN 'object' THEN jsonb_build_array(doc -> 'team')
                                               || CASE WHEN jsonb_typeof(doc #> '{team,members}') = 'array' THEN doc #> '{team,members}' ELSE '[]' END
                                          ELSE '[]' END) m
            UNION ALL
            SELECT v.published_by FROM barecount.datasets d JOIN barecount.dataset_versions v
                ON v.tenant_id = d.tenant_id AND v.dataset = d.dataset AND v.version = d.latest_version
             WHERE d.tenant_id = _policy_request.tenant_id AND d.dataset = resource) x
            WHERE o IS NOT NULL AND o <> '' ORDER BY o);
        attrs := jsonb_build_object('tags', to_jsonb(tags), 'layer', layer, 'contract', coalesce(contract, ''),
                                    'contract_version', coalesce(contract_version, ''),
                                    'domain', CASE WHEN jsonb_typeof(doc -> 'domain') = 'string' THEN doc ->> 'domain' ELSE '' END,
                                    'status', CASE WHEN jsonb_typeof(doc -> 'status') = 'string' THEN doc ->> 'status' ELSE '' END,
                                    'owners', to_jsonb(owners));
    END IF;
    RETURN jsonb_build_object(
        'tenant', tenant_id, 'principal', principal, 'roles', to_jsonb(coalesce(roles, '{}')), 'action', action,
        'resource', resource, 'resource_attrs', attrs,
        'context', jsonb_build_object('now', extract(epoch FROM now())::bigint, 'hour', extract(hour FROM now_utc)::bigint,
                                      'weekday', extract(isodow FROM now_utc)::bigint) || coalesce(context, '{}'));
END
$$;
COMMENT ON FUNCTION barecount._policy_request(text, text, text, text, jsonb) IS
    'Internal: the Cedar request for a decision: principal roles or token scopes, the dataset''s tags, layer, contract and its version, domain and status, owners (the contract''s team and the latest publisher), or the endpoint''s kind and host; the context with now, hour and weekday';

CREATE FUNCTION barecount._policy_documents(tenant_id text) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('name', p.name, 'body', p.body, 'version', p.version) ORDER BY p.name), '[]')
      FROM (SELECT DISTINCT ON (x.name) x.* FROM barecount.policies x WHERE x.tenant_id = _policy_documents.tenant_id
             ORDER BY x.name, x.version DESC) p
     WHERE p.active
$$;
COMMENT ON FUNCTION barecount._policy_documents(text) IS 'Internal: a tenant''s active policy documents (latest version of each)';

-- Decides, records the decision as a receipt, and refuses a denial (42501) when asked to.
CREATE FUNCTION barecount._policy_enforce(tenant_id text, principal text, action text, resource text,
                                          context jsonb, refuse boolean)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE docs jsonb := barecount._policy_documents(tenant_id); d jsonb; seq bigint; receipt jsonb; kept text;
        subject text := 'policy:' || action || ':' || resource;
BEGIN
    IF docs = '[]' THEN
        RETURN jsonb_build_object('allow', true, 'policies', '[]'::jsonb, 'reasons', '[]'::jsonb, 'obligations', '[]'::jsonb, 'errors', '[]'::jsonb);
    END IF;
    d := barecount._policy_decide(docs, barecount._policy_request(tenant_id, principal, action, resource, context));
    receipt := jsonb_build_object('inputs', '[]'::jsonb, 'outputs', '[]'::jsonb, 'principal', principal, 'action', action,
                           'resource', resource, 'decision', CASE WHEN (d ->> 'allow')::boolean THEN 'allow' ELSE 'deny' END,
                           'policies', d -> 'policies', 'reasons', d -> 'reasons', 'obligations', d -> 'obligations',
                           'versions', (SELECT jsonb_object_agg(x ->> 'name', x -> 'version') FROM jsonb_array_elements(docs) x));
    IF refuse AND NOT (d ->> 'allow')::boolean THEN
        -- the error below rolls back this transaction: the denial's receipt commits on its own
        seq := barecount._ledger_append_autonomous(tenant_id, 'policy_decision', subject, receipt);
        IF seq > 0 THEN
            kept := format(' The decision is receipt %s.', seq);
        ELSIF seq = 0 THEN
            kept := ' Its receipt is appended as soon as this transaction ends (it holds the ledger''s append lock).';
        ELSE
            kept := ' Its receipt could not be committed apart from this transaction (no background worker could be started, see max_worker_processes; it failed, see the server log; or this transaction''s denials overflowed their segment) and is lost with it.';
        END IF;
        RAISE EXCEPTION 'policy forbids % of "%": %', action, resource,
                        (SELECT string_agg(r, '; ') FROM jsonb_array_elements_text(d -> 'reasons') r)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Denied by %s.%s', (SELECT string_agg(r, ', ') FROM jsonb_array_elements_text(d -> 'policies') r), kept),
                  HINT = 'barecount.policy_check(principal, action, resource, context) explains the decision.';
    END IF;
    seq := barecount._ledger_append(tenant_id, 'policy_decision', subject, receipt);
    d := d || jsonb_build_object('ledger_seq', seq);
    RETURN d;
END
$$;
COMMENT ON FUNCTION barecount._policy_enforce(text, text, text, text, jsonb, boolean) IS
    'Internal: decide an operation under the tenant''s policies (allow when it has none), record the decision as a receipt, and raise 42501 for a denial when asked';

-- For the operations in SQL (ingest, publish): the caller and its tenant, refused on a denial.
CREATE FUNCTION barecount._policy_enforce_caller(action text, resource text, context jsonb) RETURNS jsonb
    LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT barecount._policy_enforce(barecount._tenant_required(), session_user::text, action, resource,
                                            jsonb_build_object('channel', 'sql') || coalesce(context, '{}'), true) $$;
COMMENT ON FUNCTION barecount._policy_enforce_caller(text, text, jsonb) IS
    'Internal (ingest, publish): decide the caller''s operation under its tenant''s policies; 42501 for a denial';

CREATE FUNCTION barecount.gateway_policy_decide(tenant_id text, subject text, action text, resource text,
                                                context jsonb DEFAULT '{}')
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._require_admin('decide for another role');
    IF NOT EXISTS (SELECT 1 FROM barecount.tenants t WHERE t.tenant_id = gateway_policy_decide.tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', tenant_id USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM barecount._tenant_active(tenant_id);
    RETURN barecount._policy_enforce(tenant_id, subject, action, resource, coalesce(context, '{}'), false);
END
$$;
COMMENT ON FUNCTION barecount.gateway_policy_decide(text, text, text, text, jsonb) IS
    'For gateways (barecount-flight: export, read), which have authenticated the credential: the decision for its operation under its tenant''s policies, recorded as a receipt (committed even when it denies); the gateway refuses a denial';

CREATE FUNCTION barecount.policy_check(principal text, action text, resource text, context jsonb DEFAULT '{}')
    RETURNS TABLE (decision text, policies text[], reasons text[], obligations text[], errors text[], request jsonb)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE t text := barecount._tenant_required(); r jsonb; d jsonb;
BEGIN
    IF principal IS NULL OR resource IS NULL THEN
        RAISE EXCEPTION 'barecount.policy_check: principal and resource are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF principal NOT LIKE 'token:%' AND NOT EXISTS (SELECT 1 FROM barecount.tenant_members m WHERE m.role_name = principal AND m.tenant_id = t)
       AND NOT (to_regrole(principal) IS NOT NULL AND pg_has_role(principal, 'barecount_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'role "%" is not a member of this tenant', principal USING ERRCODE = 'undefined_object',
            HINT = 'Name a login role of the tenant (or an admin), or token:<id> for an API token.';
    END IF;
    IF principal LIKE 'token:%' AND NOT EXISTS (SELECT 1 FROM barecount.tokens k WHERE k.token_id = substr(principal, 7) AND k.tenant_id = t) THEN
        RAISE EXCEPTION 'token "%" is not a token of this tenant', substr(principal, 7) USING ERRCODE = 'undefined_object';
    END IF;
    r := barecount._policy_request(t, principal, action, resource, context);
    d := barecount._policy_decide(barecount._policy_documents(t), r);
    RETURN QUERY SELECT CASE WHEN (d ->> 'allow')::boolean THEN 'allow' ELSE 'deny' END,
                        ARRAY(SELECT jsonb_array_elements_text(d -> 'policies')),
                        ARRAY(SELECT jsonb_array_elements_text(d -> 'reasons')),
                        ARRAY(SELECT jsonb_array_elements_text(d -> 'obligations')),
                        ARRAY(SELECT jsonb_array_elements_text(d -> 'errors')),
                        r;
END
$$;
COMMENT ON FUNCTION barecount.policy_check(text, text, text, jsonb) IS
    'Explain how the tenant''s policies decide an operation (principal: a login role of the tenant or token:<id>; action ingest, publish, export, read, deliver; a dataset or action name; context scopes, rows, format, channel...): decision, the policies that decided, reasons, obligations, and the request as Cedar saw it. Records nothing';

-- One registry: Cedar documents and the publish obligations (sql/evidence.sql), which keep their
-- own behaviour, listed as a kind of policy.
CREATE VIEW barecount.policy_registry WITH (security_barrier, security_invoker) AS
    SELECT p.tenant_id, 'cedar'::text AS kind, p.name, p.version, p.active,
           'ingest, publish, export, read, deliver'::text AS applies_to, p.body AS rule, p.defined_by, p.defined_at, p.ledger_seq
      FROM (SELECT DISTINCT ON (x.tenant_id, x.name) x.* FROM barecount.policies x ORDER BY x.tenant_id, x.name, x.version DESC) p
    UNION ALL
    SELECT o.tenant_id, 'obligation', o.name, 1, true, o.event_type || ' ' || o.subject,
           jsonb_build_object('rule', o.rule, 'severity', o.severity)::text, o.defined_by, o.defined_at, o.ledger_seq
      FROM barecount.obligations o;
COMMENT ON VIEW barecount.policy_registry IS
    'Every policy of the tenant: Cedar documents (latest version) and publish obligations (evidence rules, as obligation_define made them)';
ALTER VIEW barecount.policy_registry OWNER TO barecount_owner;
REVOKE ALL ON barecount.policy_registry FROM PUBLIC;
GRANT SELECT ON barecount.policy_registry TO barecount_engineer, barecount_publisher;

-- Owners, grants ---------------------------------------------------------------------------------
ALTER FUNCTION barecount.tenant_suspend(text, text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.tenant_resume(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.tenant_offboard_check(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.tenant_export_rows(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.tenant_ledger_slice(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.tenant_offboard(text, jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag_define(text, text, jsonb, text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag_rollout(text, integer, text[], jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag_set(text, text, jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.setting(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flag(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.flags_list() OWNER TO barecount_owner;
ALTER FUNCTION barecount.gateway_flags(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_define(text, text, text[], text[], jsonb, jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_upsert(text, jsonb, text, timestamptz, boolean) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_end(text, text, timestamptz) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_merge(text, timestamptz) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_as_of(text, timestamptz) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_history(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.master_at(text, text, timestamptz) OWNER TO barecount_owner;
ALTER FUNCTION barecount.policy_define(text, text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.policy_disable(text) OWNER TO barecount_owner;
ALTER FUNCTION barecount.dataset_tags_set(text, text[]) OWNER TO barecount_owner;
ALTER FUNCTION barecount._policy_enforce_caller(text, text, jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.gateway_policy_decide(text, text, text, text, jsonb) OWNER TO barecount_owner;
ALTER FUNCTION barecount.policy_check(text, text, text, jsonb) OWNER TO barecount_owner;
-- As functions.sql does for the rest (in a fresh install it runs again after this file, with
-- the same result): nothing is PUBLIC; each role gets what it calls.
REVOKE EXECUTE ON FUNCTION barecount._tenant_active(text), barecount._tenant_required(),
                           barecount._require_role(name, text),
                           barecount.tenant_suspend(text, text),
                           barecount.tenant_resume(text), barecount._flag_bucket(text, text),
                           barecount._tenant_tables(), barecount.tenant_offboard_check(text),
                           barecount.tenant_export_rows(text), barecount.tenant_ledger_slice(text),
                           barecount._ledger_slice_sha256(text), barecount.tenant_offboard(text, jsonb),
                           barecount._flag_check(text, text, jsonb), barecount._flag_row(text),
                           barecount._flag_resolve(barecount.flags, text),
                           barecount.flag_define(text, text, jsonb, text),
                           barecount.flag_rollout(text, integer, text[], jsonb),
                           barecount.flag_set(text, text, jsonb), barecount.setting(text),
                           barecount.flag(text), barecount.flags_list(), barecount.gateway_flags(text),
                           barecount._master_entity(text, text, boolean), barecount._master_key(text[], jsonb),
                           barecount._master_tracked_sha256(text[], jsonb),
                           barecount.master_define(text, text, text[], text[], jsonb, jsonb),
                           barecount.master_upsert(text, jsonb, text, timestamptz, boolean),
                           barecount.master_end(text, text, timestamptz), barecount.master_merge(text, timestamptz),
                           barecount.master_as_of(text, timestamptz), barecount.master_history(text),
                           barecount.master_at(text, text, timestamptz),
                           barecount._policy_parse(text, text), barecount._policy_decide(jsonb, jsonb),
                           barecount._ledger_append_autonomous(text, text, text, jsonb),
                           barecount.policy_define(text, text), barecount.policy_disable(text),
                           barecount.dataset_tags_set(text, text[]),
                           barecount._policy_request(text, text, text, text, jsonb), barecount._policy_documents(text),
                           barecount._policy_enforce(text, text, text, text, jsonb, boolean),
                           barecount._policy_enforce_caller(text, text, jsonb),
                           barecount.gateway_policy_decide(text, text, text, text, jsonb),
                           barecount.policy_check(text, text, text, jsonb)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION barecount._policy_enforce_caller(text, text, jsonb) TO barecount_reader;
GRANT EXECUTE ON FUNCTION barecount.policy_check(text, text, text, jsonb) TO barecount_engineer, barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.dataset_tags_set(text, text[]) TO barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.policy_define(text, text), barecount.policy_disable(text),
                          barecount.gateway_policy_decide(text, text, text, text, jsonb)
    TO barecount_admin;
GRANT EXECUTE ON FUNCTION barecount.master_define(text, text, text[], text[], jsonb, jsonb),
                          barecount.master_upsert(text, jsonb, text, timestamptz, boolean),
                          barecount.master_end(text, text, timestamptz), barecount.master_merge(text, timestamptz)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.master_as_of(text, timestamptz), barecount.master_history(text),
                          barecount.master_at(text, text, timestamptz)
    TO barecount_engineer, barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.setting(text), barecount.flag(text), barecount.flags_list()
    TO barecount_reader;
GRANT EXECUTE ON FUNCTION barecount.tenant_offboard_check(text), barecount.tenant_export_rows(text),
                          barecount.tenant_ledger_slice(text), barecount.tenant_offboard(text, jsonb)
    TO barecount_admin;
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

-- 0.2.0: auto combines the three lowest-AICc ETS models; ets is the best alone (the comment's
-- one source: functions.sql, an install's last part, leaves it to this file)
COMMENT ON FUNCTION barecount.kpi_forecast(text, integer, text, jsonb) IS
    'Forecast a KPI''s measure per dimension values for the next horizon periods of its calendar and grain, with 80 and 95 percent intervals: auto (the three lowest-AICc ETS models combined by Akaike weights), ets (the lowest AICc alone), holt_winters_additive/multiplicative/damped, holt, holt_damped, ses, any ETS model as ets_<error><trend><season> (ets_mam, ets_madn, ...), seasonal_naive, naive, drift';

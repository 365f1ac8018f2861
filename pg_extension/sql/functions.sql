-- Comments on and grants for the functions pgrx generates (runs last, inside CREATE EXTENSION).
COMMENT ON FUNCTION barecount.version() IS 'BareCount extension version';
COMMENT ON FUNCTION barecount.contract_register(text) IS
    'Register a data contract version (ODCS v3, YAML or JSON text). Versions are immutable; the same content again is a no-op returning the existing version. Creates raw.<dataset> for each schema object and writes a ledger receipt.';
COMMENT ON FUNCTION barecount.validate(text, jsonb) IS
    'True when the row satisfies the latest contract version governing the dataset (JSON Schema 2020-12, formats asserted)';
COMMENT ON FUNCTION barecount.validation_errors(text, jsonb) IS
    'One row per error of the row against the latest contract version governing the dataset: instance path, schema keyword, message';
COMMENT ON FUNCTION barecount.ingest(text, jsonb) IS
    'Ingest a JSON array of rows: valid rows into raw.<dataset>, invalid rows into barecount.quarantine with every error, one batch and ledger receipt, all in the caller''s transaction';
COMMENT ON FUNCTION barecount.publish(text, text) IS
    'Publish a query, table or view as the next immutable version <published schema>.<dataset>__v<N> (published for the default tenant, published_<tenant> for others), repoint the view <published schema>.<dataset>, record schema, row count, bytes and content hash, write a ledger receipt and NOTIFY barecount_publish';
COMMENT ON FUNCTION barecount.token_create(text, text[], timestamptz, text) IS
    'Create an access token for a tenant (publishers: own tenant; admins: any) with scopes read/export and an expiry within a year. Returns the token once; only a salted hash is stored.';
COMMENT ON FUNCTION barecount.token_revoke(text) IS 'Revoke a token of the current tenant (admins: any); true if it was active';
COMMENT ON FUNCTION barecount.token_list() IS 'Tokens of the current tenant with scopes, expiry and status; never secrets or hashes';
COMMENT ON FUNCTION barecount.token_authenticate(text) IS
    'For gateways (members of barecount_admin): the tenant and scopes of a valid token; SQLSTATE 28000 for an invalid, expired or revoked one';
COMMENT ON FUNCTION barecount.entitlement_set(text, jsonb) IS
    'Admins: set a tenant''s plan limits (max_datasets, max_published_versions, max_exports_per_day, max_rows_served_per_day; null = unlimited)';
COMMENT ON FUNCTION barecount.usage_charge(text, text, bigint, bigint) IS
    'For gateways: check the plan and meter a read or export (rows, bytes) for a tenant; SQLSTATE 53400 past a daily limit';
COMMENT ON FUNCTION barecount.ledger_verify(bigint, text) IS
    'Recompute the whole ledger chain (every hash, link and sequence number, and a kept digest if given); reports the first broken entry and why';
COMMENT ON FUNCTION barecount.ledger_digest() IS
    'The ledger''s last (seq, entry_hash): keep it outside the database and pass it to ledger_verify later to prove nothing up to it was rewritten or truncated';
COMMENT ON FUNCTION barecount.verify_dataset(text, integer) IS
    'Recompute a published version''s content hash (barecount-content-v1) and compare it with the catalog and the publish receipt; version NULL = latest';
COMMENT ON FUNCTION barecount.lineage_upstream(text, integer) IS
    'Everything an object (published.sales@3, published.sales, raw.orders, batch:7, contract:orders@1.0.0) came from, from the ledger''s recorded inputs';
COMMENT ON FUNCTION barecount.lineage_downstream(text, integer) IS
    'Everything recorded as made from an object, from the ledger''s recorded inputs';
COMMENT ON FUNCTION barecount.obligation_define(text, text, text, jsonb, text) IS
    'Define or replace an evidence obligation for the current tenant (publish events; rules validated_batches and receipt; severity error or warning)';
COMMENT ON FUNCTION barecount.json_schema_validate(jsonb, jsonb) IS
    'True when the instance is valid against the JSON Schema (2020-12 unless $schema says otherwise; format is an annotation); $refs resolve to registered resources only';
COMMENT ON FUNCTION barecount.json_schema_errors(jsonb, jsonb) IS
    'Every error of the instance against the JSON Schema: instance path, schema keyword, message';
COMMENT ON FUNCTION barecount.json_schema_resource_put(text, jsonb) IS
    'Register or replace the schema that a $ref URI resolves to, for the current tenant';
COMMENT ON FUNCTION barecount.quarantine_replay(text, bigint) IS
    'Re-validate the dataset''s pending quarantined rows (all, or one batch''s) against the latest contract version and release those that now pass; writes a replay receipt naming each released row';
COMMENT ON FUNCTION barecount.ingest_rows(text, jsonb[]) IS
    'Ingest an array of jsonb rows (e.g. array_agg over a query): as ingest(text, jsonb)';
COMMENT ON FUNCTION barecount.ingest_table(text, text) IS
    'Ingest every row of a staging table or view (each row as a JSON object of its columns), read with the caller''s privileges: as ingest(text, jsonb)';
COMMENT ON FUNCTION barecount.contract_set_compatibility(text, text) IS
    'Set the compatibility mode new versions of a contract are checked against on registration: BACKWARD (default), FORWARD, FULL, NONE, or a _TRANSITIVE variant';
COMMENT ON FUNCTION barecount.contract_diff(text, text, text) IS
    'Every change between two registered versions of a contract (dataset, path, kind, old, new) and whether it breaks BACKWARD and FORWARD readers';
COMMENT ON FUNCTION barecount.contract_unsupported_fields(text, text) IS
    'Fields of a contract version (latest when NULL) that BareCount keeps verbatim but does not interpret';
COMMENT ON FUNCTION barecount.validate_batch(text, jsonb) IS
    'Set-based validation of a JSON array of rows against the contract governing the dataset: row_no, valid, errors (jsonb), ingesting nothing';
COMMENT ON FUNCTION barecount.calendar_create(text, jsonb) IS
    'Create a calendar (gregorian fiscal, iso_week, retail 4-4-5/4-5-4/5-4-4) or a new version when the definition changed; the same definition again returns the current version';
COMMENT ON FUNCTION barecount.fiscal_year(date, text) IS 'The fiscal year (label) of the date in the named calendar';
COMMENT ON FUNCTION barecount.fiscal_quarter(date, text) IS 'The fiscal quarter (1-4) of the date in the named calendar';
COMMENT ON FUNCTION barecount.fiscal_period(date, text) IS 'The fiscal period label of the date, e.g. FY2024-P03';
COMMENT ON FUNCTION barecount.fiscal_week(date, text) IS 'The fiscal week (1-53) of the date in the named calendar';
COMMENT ON FUNCTION barecount.fiscal_day_of_year(date, text) IS 'The day of the fiscal year (1-371) of the date';
COMMENT ON FUNCTION barecount.period_label(date, text, text) IS 'Label of the period of a grain (year, quarter, period, week, day) containing the date, e.g. FY2024-W05';
COMMENT ON FUNCTION barecount.period_start(date, text, text) IS 'First day of the period of a grain containing the date';
COMMENT ON FUNCTION barecount.period_end(date, text, text) IS 'Last day of the period of a grain containing the date';
COMMENT ON FUNCTION barecount.calendar_periods(text, text, date, date) IS 'Every period of a grain overlapping [from, to]: label, fiscal year, index, start, end (date spines, backfill scaffolding)';
COMMENT ON FUNCTION barecount.is_working_day(date, text) IS 'Whether the date is a working day of the calendar (weekend, holiday set, closures, extra working days)';
COMMENT ON FUNCTION barecount.working_days_between(date, date, text) IS 'Working days of the calendar in [from, to)';
COMMENT ON FUNCTION barecount.add_working_days(date, integer, text) IS 'The working day n working days after the first working day on or after the date (negative n: before)';
COMMENT ON FUNCTION barecount.next_working_day(date, text) IS 'The first working day on or after the date';
COMMENT ON FUNCTION barecount.previous_working_day(date, text) IS 'The last working day on or before the date';
COMMENT ON FUNCTION barecount.period_close(text, text, date, boolean) IS 'Close (soft = true: soft-close) the period of a grain containing the date; writes a period_close receipt';
COMMENT ON FUNCTION barecount.period_reopen(text, text, date, text) IS 'Reopen the period of a grain containing the date (a closed one needs a reason); writes a period_reopen receipt';
COMMENT ON FUNCTION barecount.restatement(text, text) IS 'Run one statement that may change rows of closed periods in guarded tables, after a restatement receipt recording the reason and the statement';
COMMENT ON FUNCTION barecount.model_define(text, text, text) IS
    'Register (or version) a GDP model: a SELECT whose rows become <gdp schema>.<name> (gdp, or gdp_<tenant>), optionally checked against the contract governing a dataset; writes a model_define receipt';
COMMENT ON FUNCTION barecount.model_run(text) IS
    'Run a GDP model after the models it reads (dependency order, cycles refused): check its rows against its contract, replace the tenant''s rows of <gdp schema>.<name>, write a model_run receipt naming its inputs and content hash';
COMMENT ON FUNCTION barecount.kpi_define(text, jsonb) IS 'Define a KPI or a new version of it (source, time, grain or calendar grain, dimensions, measures incl. ratios, filter)';
COMMENT ON FUNCTION barecount.kpi_materialize(text, date, date) IS 'Recompute the KPI periods whose first day lies in [from, to] into kpi.<name>, atomically and idempotently; the receipt records each period''s content hash';
COMMENT ON FUNCTION barecount.verify_kpi_period(text, text) IS 'Recompute a KPI period''s content hash from its stored rows and compare it with its latest materialization receipt';
COMMENT ON FUNCTION barecount.kpi_refresh(text) IS 'Recompute exactly the KPI periods whose source rows changed since they were materialized, however old';
COMMENT ON FUNCTION barecount.dataset_pin(text, integer, text) IS 'Pin a published version for a holder; a pinned version is never retired';
COMMENT ON FUNCTION barecount.dataset_unpin(text, integer, text) IS 'Remove a holder''s pin on a published version';
COMMENT ON FUNCTION barecount.dataset_deprecate(text, integer) IS 'Mark an old published version deprecated (still served); writes a receipt';
COMMENT ON FUNCTION barecount.dataset_retire(text, integer) IS 'Retire an old published version: no longer served or readable, kept for verification; refused while pinned or for the latest; writes a receipt';

COMMENT ON FUNCTION barecount.pipeline_define(text, jsonb) IS
    'Define a pipeline or a new version of it (steps: ingest from a table or file, model, kpi, publish, hook; calendar and grain; retry policy; quarantine rule); unknown objects, cycles and grain mismatches are refused naming the step';
COMMENT ON FUNCTION barecount.pipeline_run(text, text, text, text) IS
    'Run a pipeline over dates or calendar periods (''FY2024-P01'' to ''FY2024-P06''): steps in dependency order, each in a subtransaction retried on transient errors, each with a receipt linked to the run; the same idempotency key again returns the first run';
COMMENT ON FUNCTION barecount.pipeline_resume(bigint) IS
    'Resume a failed pipeline run from its failed step; the steps that succeeded are not run again';
COMMENT ON FUNCTION barecount.pipeline_schedule(text, text, boolean) IS
    'Schedule a pipeline with pg_cron (a cron expression); calendar_aware runs the period that closed, on the first working day after it; scheduled runs are ordinary runs';
COMMENT ON FUNCTION barecount.pipeline_unschedule(text) IS 'Remove a pipeline''s pg_cron schedule; true if there was one';
COMMENT ON FUNCTION barecount._pipeline_tick(text, boolean, date) IS
    'What a pipeline''s pg_cron job runs: the run due on the day (default today; another day catches a missed firing up), or NULL when none is; returns the run id';
COMMENT ON FUNCTION barecount.ingest_file(text, text, text) IS
    'Ingest a CSV, JSON Lines or Parquet file named relative to barecount.load_directory, as one batch (CSV cells typed by the contract, Parquet columns by their own types); the same file content again is recognised and not ingested twice';
COMMENT ON FUNCTION barecount.kpi_anomalies(text, text, jsonb) IS
    'Anomalies in a KPI''s materialized series per dimension values: method seasonal (decomposition residuals, season from the grain), mad (robust z-score) or esd (generalized ESD, S-H-ESD); options measure, threshold, max_share, alpha, season. One row per period with value, expected, score and verdict';
-- barecount.kpi_forecast's comment: barecount--0.1.0--0.2.0.sql (both install paths run it)
COMMENT ON FUNCTION barecount.action_define(text, text, jsonb) IS
    'Define an action (kinds webhook {url, timeout_ms, retry_schedule_s, auth_secret}, sql {function}, notify {channel}) or a new version of it; the same definition again returns its version; a receipt per version';
COMMENT ON FUNCTION barecount.playbook_define(text, text[], jsonb, text[], interval, interval) IS
    'Define a playbook: the events it reacts to (threshold_breach, threshold_recovery, anomaly, forecast_breach, publish, quarantine_spike, run_failed, run_finished, hook), conditions (kpi, measure, level, dims, dataset, pipeline, event, min_score), the actions it fires, a de-duplication window and a cool-down; versioned, a receipt per version';
COMMENT ON FUNCTION barecount._playbooks_fire(bigint[]) IS
    'Internal: run the playbooks over new outbox events (called by the trigger on barecount.events as barecount_owner); every decision, fired or suppressed, is a row in playbook_decisions with a receipt';
COMMENT ON FUNCTION barecount.webhook_secret_rotate(text, interval) IS
    'A new Standard Webhooks signing secret (whsec_...) for a webhook action, returned once and stored encrypted; the previous one keeps signing for the overlap';
COMMENT ON FUNCTION barecount.secret_set(text, text) IS
    'Store a credential an action uses (e.g. the Authorization header a webhook''s auth_secret names), encrypted at rest; returns its fingerprint, never readable back';
COMMENT ON FUNCTION barecount.secrets_rewrap() IS
    'Admins: re-wrap every tenant''s data-encryption key with the keyring''s current key (after a key rotation); secrets'' ciphertexts are unchanged. Returns how many keys were re-wrapped';
COMMENT ON FUNCTION barecount.gateway_delivery_report(bigint, integer, text, timestamptz, text, integer, text, double precision) IS
    'For the delivery worker: record an attempt (HTTP status, timeout or connection failure) and move the delivery on: delivered, retried on its schedule (Retry-After honoured) or dead; a final outcome is a ledger receipt';
COMMENT ON FUNCTION barecount.delivery_replay(bigint, text) IS
    'Replay dead letters (one delivery, or all of an action''s) with the same webhook-id and a fresh retry schedule; a receipt each';
COMMENT ON FUNCTION barecount.actions_run(integer) IS
    'Run the current tenant''s pending sql actions as the calling role: each calls its function with the event as jsonb; an error makes that delivery dead with its SQLSTATE';

-- Who may call what. Functions run as their caller; privileged writes happen inside the
-- extension (see src/privilege.rs), so these grants are the gate.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA barecount FROM PUBLIC;
-- row-level security policies call these, so every role needs them
GRANT EXECUTE ON FUNCTION barecount.current_tenant(), barecount._is_admin(), barecount.version() TO PUBLIC;
GRANT EXECUTE ON FUNCTION barecount.contract_register(text), barecount.ingest(text, jsonb),
                          barecount.validate(text, jsonb), barecount.validation_errors(text, jsonb)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.publish(text, text) TO barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.tenant_create(text, text), barecount.tenant_add_member(text, regrole),
                          barecount.tenant_remove_member(regrole), barecount.act_as_tenant(text),
                          barecount._require_admin(text)
    TO barecount_admin;
GRANT EXECUTE ON FUNCTION barecount.token_create(text, text[], timestamptz, text), barecount.token_revoke(text),
                          barecount.token_list()
    TO barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.credential_check(text) TO barecount_admin;
GRANT EXECUTE ON FUNCTION barecount.token_authenticate(text), barecount.entitlement_set(text, jsonb),
                          barecount.usage_charge(text, text, bigint, bigint)
    TO barecount_admin;
GRANT EXECUTE ON FUNCTION barecount.ledger_verify(bigint, text), barecount.ledger_digest(),
                          barecount.verify_dataset(text, integer), barecount.lineage_upstream(text, integer),
                          barecount.lineage_downstream(text, integer)
    TO barecount_engineer, barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.obligation_define(text, text, text, jsonb, text) TO barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.json_schema_validate(jsonb, jsonb), barecount.json_schema_errors(jsonb, jsonb),
                          barecount.json_schema_resource_put(text, jsonb)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.quarantine_replay(text, bigint) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.ingest_rows(text, jsonb[]), barecount.ingest_table(text, text) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.contract_set_compatibility(text, text), barecount.contract_diff(text, text, text),
                          barecount.contract_unsupported_fields(text, text)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.validate_batch(text, jsonb) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.calendar_create(text, jsonb) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.fiscal_year(date, text), barecount.fiscal_quarter(date, text),
                          barecount.fiscal_period(date, text), barecount.fiscal_week(date, text),
                          barecount.fiscal_day_of_year(date, text), barecount.period_label(date, text, text),
                          barecount.period_start(date, text, text), barecount.period_end(date, text, text),
                          barecount.calendar_periods(text, text, date, date)
    TO barecount_reader;
GRANT EXECUTE ON FUNCTION barecount.is_working_day(date, text), barecount.working_days_between(date, date, text),
                          barecount.add_working_days(date, integer, text), barecount.next_working_day(date, text),
                          barecount.previous_working_day(date, text)
    TO barecount_reader;
GRANT EXECUTE ON FUNCTION barecount.period_close(text, text, date, boolean), barecount.period_reopen(text, text, date, text)
    TO barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.restatement(text, text), barecount.period_guard(regclass, text, text, text)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.model_define(text, text, text), barecount.model_run(text) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.kpi_define(text, jsonb), barecount.kpi_materialize(text, date, date) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.verify_kpi_period(text, text) TO barecount_engineer, barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.kpi_refresh(text) TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.pipeline_define(text, jsonb), barecount.pipeline_run(text, text, text, text),
                          barecount.pipeline_resume(bigint), barecount.pipeline_schedule(text, text, boolean),
                          barecount.pipeline_unschedule(text), barecount._pipeline_tick(text, boolean, date),
                          barecount.ingest_file(text, text, text)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.pipeline_runs_page(text, bigint, integer),
                          barecount.events_claim(text, integer, interval), barecount.events_ack(text, bigint[])
    TO barecount_engineer, barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.kpi_anomalies(text, text, jsonb), barecount.kpi_forecast(text, integer, text, jsonb)
    TO barecount_reader, barecount_engineer, barecount_publisher;
GRANT EXECUTE ON FUNCTION barecount.action_define(text, text, jsonb),
                          barecount.playbook_define(text, text[], jsonb, text[], interval, interval),
                          barecount.webhook_secret_rotate(text, interval), barecount.secret_set(text, text),
                          barecount.delivery_replay(bigint, text), barecount.actions_run(integer)
    TO barecount_engineer;
GRANT EXECUTE ON FUNCTION barecount.secrets_rewrap(),
                          barecount.gateway_delivery_report(bigint, integer, text, timestamptz, text, integer, text, double precision),
                          barecount.gateway_deliveries_claim(text, integer, interval)
    TO barecount_admin;
GRANT EXECUTE ON FUNCTION barecount._playbooks_fire(bigint[]) TO barecount_owner;
GRANT EXECUTE ON FUNCTION barecount.dataset_pin(text, integer, text), barecount.dataset_unpin(text, integer, text) TO barecount_reader;
GRANT EXECUTE ON FUNCTION barecount.dataset_deprecate(text, integer), barecount.dataset_retire(text, integer) TO barecount_publisher;

COMMENT ON FUNCTION barecount.password_authenticate(text, text) IS
    'For gateways (members of barecount_admin): check a login role''s own SCRAM-SHA-256 password and return its tenant and scopes; SQLSTATE 28P01 for any failure';
COMMENT ON FUNCTION barecount.export_receipt(text, text, text, text, bigint, bigint, text, text) IS
    'For gateways: record an export (source, format parquet/csv/arrow, path, rows, bytes, file SHA-256) — checks the daily export limit (53400), meters it and appends a ledger receipt';
COMMENT ON FUNCTION barecount.gateway_ingest(text, text, text, text) IS
    'For gateways (Flight DoPut): ingest a JSON array of rows for the tenant of a credential (login role or token:<id>) holding the ingest scope now — one batch under the dataset''s contract, invalid rows quarantined, one receipt; the same rows (or idempotency key) again return the first batch with already_landed';
GRANT EXECUTE ON FUNCTION barecount.password_authenticate(text, text),
                          barecount.export_receipt(text, text, text, text, bigint, bigint, text, text),
                          barecount.gateway_ingest(text, text, text, text)
    TO barecount_admin;

-- Ownership: barecount_owner (NOSUPERUSER, NOLOGIN, NOINHERIT, BYPASSRLS) owns the catalog,
-- the stores' schemas and the SECURITY DEFINER helpers, so no privileged path runs as a
-- superuser. The event trigger's function stays with the superuser who created the extension:
-- only a superuser may take over a table another role created, and it runs nothing of the
-- table's before checking it carries no user code.
DO $owner$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
              WHERE c.relnamespace = 'barecount'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p') LOOP
        IF r.relkind = 'S' THEN
            CONTINUE;  -- identity sequences follow their table
        END IF;
        EXECUTE format('ALTER TABLE %s OWNER TO barecount_owner', r.rel);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p
              WHERE p.pronamespace = 'barecount'::regnamespace AND p.prosecdef
                AND p.oid <> 'barecount._guard_store_tables()'::regprocedure LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO barecount_owner', r.fn);
    END LOOP;
END
$owner$;
ALTER SCHEMA raw OWNER TO barecount_owner;
ALTER SCHEMA gdp OWNER TO barecount_owner;
ALTER SCHEMA kpi OWNER TO barecount_owner;
ALTER SCHEMA published OWNER TO barecount_owner;
GRANT USAGE ON SCHEMA barecount TO barecount_owner;
-- tenant_create makes each tenant's layer schemas (gdp_<t>, kpi_<t>, published_<t>)
DO $db$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO barecount_owner', current_database()); END $db$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA barecount TO barecount_owner;
-- password_authenticate checks a login role's SCRAM verifier: the columns it needs, no more.
-- (pg_authid is shared by every database: granted once, so concurrent CREATE EXTENSIONs in
-- other databases do not update the same catalog row)
DO $authid$
BEGIN
    IF NOT has_column_privilege('barecount_owner', 'pg_catalog.pg_authid', 'rolpassword', 'SELECT') THEN
        GRANT SELECT (rolname, rolpassword, rolcanlogin, rolvaliduntil) ON pg_catalog.pg_authid TO barecount_owner;
    END IF;
END
$authid$;

COMMENT ON FUNCTION barecount.credential_check(text) IS
    'For gateways: whether the credential behind a session (a login role, or token:<id>) still holds — not revoked or expired, still mapped, still holding a BareCount role — and its tenant and scopes now; SQLSTATE 28000 otherwise';
COMMENT ON FUNCTION barecount._outer_role() IS
    'The role the session acts as outside SECURITY DEFINER functions (the login role, or the role SET ROLE chose): current_tenant()''s fallback for pooled connections';
COMMENT ON FUNCTION barecount._restatement_seq() IS
    'For the period guard: the receipt of the restatement whose statement is running now, or NULL; set only inside barecount.restatement, never from SQL';
COMMENT ON FUNCTION barecount._store_write_receipt(oid, text) IS
    'For the barecount_store_write trigger: a store_write ledger receipt for a write to a gdp or kpi table made outside BareCount';
COMMENT ON FUNCTION barecount._ledger_seq(bytea) IS
    'Internal: the sequence number in a ledger entry''s canonical bytes (generates barecount.ledger.seq)';
COMMENT ON FUNCTION barecount._ledger_field(bytea, integer) IS
    'Internal: a text field of a ledger entry''s canonical bytes (generates the ledger''s text columns)';
COMMENT ON FUNCTION barecount._ledger_at(bytea) IS
    'Internal: the time in a ledger entry''s canonical bytes (generates barecount.ledger.at)';
COMMENT ON FUNCTION barecount._ledger_inputs(bytea) IS
    'Internal: the inputs in a ledger entry''s canonical bytes, as jsonb (generates barecount.ledger.inputs)';
COMMENT ON FUNCTION barecount._ledger_append(text, text, text, jsonb) IS
    'For BareCount''s own SECURITY DEFINER helpers: append a ledger receipt (granted to barecount_owner only)';

-- Lineage obligations: rules on the evidence an event needs. Runs after tenancy.sql.
CREATE TABLE barecount.obligations (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    name       text NOT NULL,
    event_type text NOT NULL CHECK (event_type IN ('publish')),
    subject    text NOT NULL,
    rule       jsonb NOT NULL,
    severity   text NOT NULL CHECK (severity IN ('error', 'warning')),
    defined_by name NOT NULL DEFAULT session_user,
    defined_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
COMMENT ON TABLE barecount.obligations IS
    'Evidence rules per tenant: before event_type on subject (a dataset, or *) the rule''s evidence must exist; error refuses, warning records';
SELECT barecount._protect_table('barecount.obligations');
REVOKE ALL ON barecount.obligations FROM PUBLIC;
GRANT SELECT ON barecount.obligations TO barecount_engineer, barecount_publisher;

-- Quality rule results per ingested batch.
CREATE TABLE barecount.quality_results (
    tenant_id      text NOT NULL REFERENCES barecount.tenants,
    batch_id       bigint NOT NULL REFERENCES barecount.batches,
    dataset        text NOT NULL,
    rule_name      text NOT NULL,
    rule           jsonb NOT NULL,
    severity       text NOT NULL CHECK (severity IN ('blocking', 'warning')),
    passed         boolean NOT NULL,
    failing_count  bigint NOT NULL,
    failing_sample jsonb NOT NULL,
    PRIMARY KEY (batch_id, rule_name)
);
COMMENT ON TABLE barecount.quality_results IS
    'Contract quality rules evaluated per batch: passed, failing count and a sample of failing row numbers or values; a failed blocking rule quarantined the batch';
SELECT barecount._protect_table('barecount.quality_results');
REVOKE ALL ON barecount.quality_results FROM PUBLIC;
GRANT SELECT ON barecount.quality_results TO barecount_engineer, barecount_publisher;

-- Calendars, versioned like contracts.
CREATE TABLE barecount.calendars (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    name       text NOT NULL,
    version    integer NOT NULL CHECK (version > 0),
    spec       jsonb NOT NULL,
    created_by name NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.calendars IS
    'Fiscal, ISO-week and retail calendar definitions per tenant, versioned; functions use the latest version';
SELECT barecount._protect_table('barecount.calendars');
REVOKE ALL ON barecount.calendars FROM PUBLIC;
GRANT SELECT ON barecount.calendars TO barecount_reader;
CREATE TRIGGER calendars_immutable BEFORE UPDATE OR DELETE ON barecount.calendars
    FOR EACH ROW EXECUTE FUNCTION barecount._refuse_write('calendar versions are immutable', 'Create a new version with barecount.calendar_create.');
COMMENT ON TRIGGER calendars_immutable ON barecount.calendars IS 'Refuses UPDATE and DELETE: calendar versions are immutable';

-- Period close: status per calendar period, and guarded tables whose rows of closed periods
-- change only through barecount.restatement(reason, statement).
CREATE TABLE barecount.period_status (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    calendar   text NOT NULL,
    grain      text NOT NULL,
    label      text NOT NULL,
    status     text NOT NULL CHECK (status IN ('open', 'soft_closed', 'closed')),
    reason     text,
    changed_by name NOT NULL DEFAULT session_user,
    changed_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, calendar, grain, label)
);
COMMENT ON TABLE barecount.period_status IS 'Close status of calendar periods (absent = open), each change with its ledger receipt';
SELECT barecount._protect_table('barecount.period_status');
REVOKE ALL ON barecount.period_status FROM PUBLIC;
GRANT SELECT ON barecount.period_status TO barecount_reader;

CREATE FUNCTION barecount._guard_closed_period() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    col text := TG_ARGV[0];
    cal text := TG_ARGV[1];
    grain text := TG_ARGV[2];
    owner_tenant text := TG_ARGV[3];
    d date;
    lbl text;
    st text;
    restating bigint := barecount._restatement_seq();
BEGIN
    -- one guard per tenant on a shared table: each looks only at its tenant's rows
    FOR d IN SELECT x FROM unnest(ARRAY[
                 CASE WHEN TG_OP IN ('UPDATE', 'DELETE') AND to_jsonb(OLD) ->> 'tenant_id' = owner_tenant THEN (to_jsonb(OLD) ->> col)::date END,
                 CASE WHEN TG_OP IN ('UPDATE', 'INSERT') AND to_jsonb(NEW) ->> 'tenant_id' = owner_tenant THEN (to_jsonb(NEW) ->> col)::date END]) x
             WHERE x IS NOT NULL LOOP
        lbl := barecount.period_label(d, cal, grain);
        SELECT s.status INTO st FROM barecount.period_status s
         WHERE s.tenant_id = owner_tenant AND s.calendar = cal AND s.grain = TG_ARGV[2] AND s.label = lbl;
        IF coalesce(st, 'open') <> 'open' THEN
            IF restating IS NULL OR NOT EXISTS (
                   SELECT 1 FROM barecount.ledger l
                    WHERE l.seq = restating AND l.event_type = 'restatement' AND l.tenant_id = owner_tenant
                      AND l.inputs ->> 'txid' = txid_current()::text) THEN
                RAISE EXCEPTION '% of a row in % period % of calendar % is not allowed', TG_OP, st, lbl, cal
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = 'Change closed periods through barecount.restatement(reason, statement), or reopen the period.';
            END IF;
        END IF;
    END LOOP;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
COMMENT ON FUNCTION barecount._guard_closed_period() IS
    'Trigger: refuses writes to rows whose date falls in a closed or soft-closed period, unless inside barecount.restatement';

CREATE FUNCTION barecount.period_guard(rel regclass, date_column text, calendar text, grain text DEFAULT 'period')
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    guard text;
    before text;
BEGIN
    IF rel IS NULL OR date_column IS NULL OR calendar IS NULL OR grain IS NULL THEN
        RAISE EXCEPTION 'barecount.period_guard: arguments rel, date_column, calendar and grain must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel)
           NOT IN (barecount._tenant_schema('gdp'), barecount._tenant_schema('kpi')) THEN
        RAISE EXCEPTION 'only tables in the tenant''s gdp and kpi schemas (%, %) can be period-guarded, not %',
            barecount._tenant_schema('gdp'), barecount._tenant_schema('kpi'), rel
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = rel AND attname = date_column AND NOT attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', rel, date_column USING ERRCODE = 'undefined_column';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM barecount.calendars c WHERE c.tenant_id = barecount.current_tenant() AND c.name = calendar) THEN
        RAISE EXCEPTION 'calendar "%" does not exist', calendar USING ERRCODE = 'undefined_object';
    END IF;
    -- the guard reads the table's rows as barecount_owner: only a table BareCount owns, with
    -- no user code, may carry one
    PERFORM barecount._assert_store_relation(rel, format('table %s', rel));
    -- one guard per tenant: a tenant replaces its own guard, never another's
    guard := 'barecount_period_guard_' || barecount.current_tenant();
    SELECT pg_get_triggerdef(t.oid) INTO before FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = guard;
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION barecount._guard_closed_period(%L, %L, %L, %L)',
                   guard, rel, date_column, calendar, grain, barecount.current_tenant());
    EXECUTE format('COMMENT ON TRIGGER %I ON %s IS %L', guard, rel,
                   'BareCount: rows of closed periods change only through barecount.restatement');
    -- a new or changed guard is a change of state: on the record (the same guard again is not)
    IF before IS DISTINCT FROM (SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = guard) THEN
        PERFORM barecount._ledger_append(barecount.current_tenant(), 'period_guard', rel::text,
            jsonb_build_object('inputs', '[]'::jsonb, 'outputs', jsonb_build_array(rel::text),
                               'date_column', date_column, 'calendar', calendar, 'grain', grain));
    END IF;
END
$$;
COMMENT ON FUNCTION barecount.period_guard(regclass, text, text, text) IS
    'Guard a gdp or kpi table: writes to rows whose date_column falls in a closed period of the calendar are refused (55000) unless made through barecount.restatement';

-- GDP models.
CREATE TABLE barecount.models (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    name       text NOT NULL,
    version    integer NOT NULL,
    sql        text NOT NULL,
    contract   text,
    defined_by name NOT NULL DEFAULT session_user,
    defined_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.models IS 'SQL models that conform raw data into gdp.<name>, versioned; the latest version runs';
SELECT barecount._protect_table('barecount.models');
REVOKE ALL ON barecount.models FROM PUBLIC;
GRANT SELECT ON barecount.models TO barecount_engineer, barecount_publisher;

-- KPI definitions.
CREATE TABLE barecount.kpis (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    name       text NOT NULL,
    version    integer NOT NULL,
    spec       jsonb NOT NULL,
    defined_by name NOT NULL DEFAULT session_user,
    defined_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.kpis IS 'KPI definitions (source, time column, grain, calendar, dimensions, measures, filter), versioned';
SELECT barecount._protect_table('barecount.kpis');
REVOKE ALL ON barecount.kpis FROM PUBLIC;
GRANT SELECT ON barecount.kpis TO barecount_reader;

-- Days whose source rows changed since a KPI was materialized.
CREATE TABLE barecount.kpi_invalidations (
    tenant_id text NOT NULL REFERENCES barecount.tenants,
    kpi       text NOT NULL,
    day       date NOT NULL,
    noted_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE barecount.kpi_invalidations IS 'Invalidation log: days of KPI source rows inserted, updated or deleted since the last refresh';
CREATE INDEX kpi_invalidations_kpi ON barecount.kpi_invalidations (tenant_id, kpi);
SELECT barecount._protect_table('barecount.kpi_invalidations');
REVOKE ALL ON barecount.kpi_invalidations FROM PUBLIC;
GRANT SELECT ON barecount.kpi_invalidations TO barecount_engineer;

CREATE FUNCTION barecount._kpi_invalidate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO barecount.kpi_invalidations (tenant_id, kpi, day)
        SELECT DISTINCT j ->> 'tenant_id', TG_ARGV[0], (j ->> TG_ARGV[1])::date
          FROM (SELECT to_jsonb(n) AS j FROM new_rows n) x WHERE j ->> TG_ARGV[1] IS NOT NULL AND j ->> 'tenant_id' = TG_ARGV[2];
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO barecount.kpi_invalidations (tenant_id, kpi, day)
        SELECT DISTINCT j ->> 'tenant_id', TG_ARGV[0], (j ->> TG_ARGV[1])::date
          FROM (SELECT to_jsonb(o) AS j FROM old_rows o) x WHERE j ->> TG_ARGV[1] IS NOT NULL AND j ->> 'tenant_id' = TG_ARGV[2];
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION barecount._kpi_invalidate() IS 'Statement trigger on KPI sources: notes the days changed rows fall on in barecount.kpi_invalidations';

-- KPI thresholds: last level seen per KPI, measure, period and dimension values, and the
-- outbox of breach and recovery events (also sent on NOTIFY barecount_kpi_events).
CREATE TABLE barecount.kpi_threshold_state (
    tenant_id text NOT NULL REFERENCES barecount.tenants,
    kpi       text NOT NULL,
    measure   text NOT NULL,
    period    text NOT NULL,
    dims      jsonb NOT NULL,
    level     text NOT NULL CHECK (level IN ('ok', 'warn', 'critical')),
    PRIMARY KEY (tenant_id, kpi, measure, period, dims)
);
COMMENT ON TABLE barecount.kpi_threshold_state IS 'The threshold level last evaluated per KPI, measure, period and dimension values';
SELECT barecount._protect_table('barecount.kpi_threshold_state');
CREATE TABLE barecount.kpi_events (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kpi        text NOT NULL,
    measure    text NOT NULL,
    period     text NOT NULL,
    dims       jsonb NOT NULL,
    value      double precision,
    level      text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('breach', 'recovery')),
    run_seq    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE barecount.kpi_events IS 'Outbox of KPI threshold breach and recovery events for actions and webhooks; each is also sent on NOTIFY barecount_kpi_events';
SELECT barecount._protect_table('barecount.kpi_events');
REVOKE ALL ON barecount.kpi_threshold_state, barecount.kpi_events FROM PUBLIC;
GRANT SELECT ON barecount.kpi_threshold_state, barecount.kpi_events TO barecount_engineer, barecount_publisher;

-- Pins on published versions: a pinned version cannot be retired.
CREATE TABLE barecount.dataset_pins (
    tenant_id text NOT NULL REFERENCES barecount.tenants,
    dataset   text NOT NULL,
    version   integer NOT NULL,
    holder    text NOT NULL,
    pinned_by name NOT NULL DEFAULT session_user,
    pinned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dataset, version, holder),
    FOREIGN KEY (tenant_id, dataset, version) REFERENCES barecount.dataset_versions
);
COMMENT ON TABLE barecount.dataset_pins IS 'Holders (dashboards, reports) that pin a published version; pinned versions are never retired';
SELECT barecount._protect_table('barecount.dataset_pins');
REVOKE ALL ON barecount.dataset_pins FROM PUBLIC;
GRANT SELECT ON barecount.dataset_pins TO barecount_reader;

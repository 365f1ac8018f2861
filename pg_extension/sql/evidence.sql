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

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

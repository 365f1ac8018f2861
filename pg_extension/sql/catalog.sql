-- BareCount catalog: schemas, catalog tables, the ledger and their guards.
-- Runs first (bootstrap) inside CREATE EXTENSION, in schema barecount.

CREATE SCHEMA raw;
COMMENT ON SCHEMA raw IS 'BareCount raw stores: one append-only table per dataset, every accepted row with its batch';
CREATE SCHEMA gdp;
COMMENT ON SCHEMA gdp IS 'BareCount golden data points: conformed tables built by models from raw stores';
CREATE SCHEMA kpi;
COMMENT ON SCHEMA kpi IS 'BareCount KPI stores: materialized KPI values per period and dimension';
CREATE SCHEMA published;
COMMENT ON SCHEMA published IS 'BareCount published store: immutable dataset versions (<dataset>__v<N>) and latest views (<dataset>)';
COMMENT ON SCHEMA barecount IS 'BareCount API functions, catalog tables and the evidence ledger';

-- Tenants -------------------------------------------------------------------------------------
CREATE TABLE barecount.tenants (
    tenant_id  text PRIMARY KEY CHECK (tenant_id ~ '^[a-z][a-z0-9_]{0,52}$'),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE barecount.tenants IS 'Tenants served by this database; every store and catalog row belongs to one';
INSERT INTO barecount.tenants (tenant_id, name) VALUES ('default', 'Default tenant');


-- Refusing writes ------------------------------------------------------------------------------
CREATE FUNCTION barecount._refuse_write() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    AS $$
BEGIN
    RAISE EXCEPTION '% on %.% is not allowed: %', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'modifying_sql_data_not_permitted',
              HINT = coalesce(TG_ARGV[1], 'This object is append-only or immutable by design.');
END
$$;
COMMENT ON FUNCTION barecount._refuse_write() IS
    'Trigger function that refuses the triggering write with SQLSTATE 2F002; TG_ARGV[0] says why, TG_ARGV[1] hints what to do instead';

-- Contracts ------------------------------------------------------------------------------------
CREATE TABLE barecount.contracts (
    tenant_id      text NOT NULL REFERENCES barecount.tenants,
    contract       text NOT NULL,
    version        text NOT NULL,
    version_sort   bigint[] NOT NULL,
    status         text NOT NULL,
    document       jsonb NOT NULL,
    source_text    text NOT NULL,
    source_sha256  text NOT NULL,
    unsupported    text[] NOT NULL DEFAULT '{}',
    registered_by  text NOT NULL DEFAULT session_user,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    ledger_seq     bigint NOT NULL,
    PRIMARY KEY (tenant_id, contract, version)
);
COMMENT ON TABLE barecount.contracts IS 'Registered data contract versions (ODCS v3), immutable once registered';
CREATE TRIGGER contracts_immutable BEFORE UPDATE OR DELETE ON barecount.contracts
    FOR EACH ROW EXECUTE FUNCTION barecount._refuse_write('contract versions are immutable', 'Register a new version instead.');
CREATE TRIGGER contracts_no_truncate BEFORE TRUNCATE ON barecount.contracts
    FOR EACH STATEMENT EXECUTE FUNCTION barecount._refuse_write('contract versions are immutable', 'Register a new version instead.');
COMMENT ON TRIGGER contracts_immutable ON barecount.contracts IS 'Refuses UPDATE and DELETE: contract versions are immutable';
COMMENT ON TRIGGER contracts_no_truncate ON barecount.contracts IS 'Refuses TRUNCATE: contract versions are immutable';

CREATE TABLE barecount.contract_datasets (
    tenant_id        text NOT NULL,
    contract         text NOT NULL,
    contract_version text NOT NULL,
    dataset          text NOT NULL,
    row_schema       jsonb NOT NULL,
    primary_key      text[] NOT NULL,
    quality          jsonb NOT NULL,
    PRIMARY KEY (tenant_id, dataset, contract, contract_version),
    FOREIGN KEY (tenant_id, contract, contract_version) REFERENCES barecount.contracts
);
COMMENT ON TABLE barecount.contract_datasets IS 'Schema objects of each contract version: the dataset, its compiled JSON Schema 2020-12 row schema, key and quality rules';

CREATE TABLE barecount.contract_settings (
    tenant_id     text NOT NULL REFERENCES barecount.tenants,
    contract      text NOT NULL,
    compatibility text NOT NULL DEFAULT 'BACKWARD' CHECK (compatibility IN
        ('BACKWARD', 'FORWARD', 'FULL', 'NONE', 'BACKWARD_TRANSITIVE', 'FORWARD_TRANSITIVE', 'FULL_TRANSITIVE')),
    updated_by    name NOT NULL DEFAULT session_user,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, contract)
);
COMMENT ON TABLE barecount.contract_settings IS 'Per-contract settings: the compatibility mode new versions are checked against (BACKWARD when absent)';

CREATE VIEW barecount.contract_versions WITH (security_invoker = true) AS
    SELECT c.tenant_id, c.contract, c.version, c.status, c.registered_by, c.registered_at, c.ledger_seq,
           array_agg(d.dataset ORDER BY d.dataset) AS datasets, c.unsupported
    FROM barecount.contracts c JOIN barecount.contract_datasets d USING (tenant_id, contract)
    WHERE d.contract_version = c.version
    GROUP BY c.tenant_id, c.contract, c.version, c.status, c.registered_by, c.registered_at, c.ledger_seq, c.unsupported;
COMMENT ON VIEW barecount.contract_versions IS 'One row per registered contract version with the datasets it declares';

-- Ingest batches and quarantine ----------------------------------------------------------------
CREATE TABLE barecount.batches (
    tenant_id        text NOT NULL REFERENCES barecount.tenants,
    batch_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset          text NOT NULL,
    contract         text NOT NULL,
    contract_version text NOT NULL,
    rows_total       bigint NOT NULL,
    rows_accepted    bigint NOT NULL,
    rows_quarantined bigint NOT NULL,
    content_hash     text NOT NULL,
    ingested_by      text NOT NULL DEFAULT session_user,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    ledger_seq       bigint NOT NULL,
    -- what raw and quarantine rows name: their batch of their tenant (checked per statement)
    UNIQUE (tenant_id, batch_id)
);
COMMENT ON TABLE barecount.batches IS 'One row per ingest call: the dataset, the contract version rows were checked against, and counts';

-- Raw stores and quarantine: every inserted row's batch must exist for its tenant. A statement trigger over
-- the inserted rows (one join per statement) instead of a foreign key (one lookup and lock per
-- row, ~40 % of an ingest).
CREATE FUNCTION barecount._raw_batches_exist() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    missing record;
BEGIN
    SELECT n.tenant_id, n.batch_id INTO missing
      FROM (SELECT DISTINCT r.tenant_id, r.batch_id FROM new_rows r) n
     WHERE NOT EXISTS (SELECT 1 FROM barecount.batches b
                        WHERE b.tenant_id = n.tenant_id AND b.batch_id = n.batch_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a row of %.% names batch % of tenant "%", which does not exist',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, missing.batch_id, missing.tenant_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Raw rows are written by barecount.ingest, with their batch.';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION barecount._raw_batches_exist() IS
    'Statement trigger on raw stores and the quarantine: refuses inserted rows whose batch does not exist for their tenant (23503)';

CREATE TABLE barecount.quarantine (
    tenant_id      text NOT NULL,
    quarantine_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id       bigint NOT NULL,
    dataset        text NOT NULL,
    row_no         integer NOT NULL,
    payload        jsonb NOT NULL,
    errors         jsonb NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz,
    released_by_contract_version text,
    released_seq   bigint,
    UNIQUE (batch_id, row_no)
);
COMMENT ON TABLE barecount.quarantine IS 'Rows that failed their contract, kept whole with every error (instance path, keyword, message), until a replay releases them (released_at, the contract version that passed them, the replay receipt)';
CREATE TRIGGER quarantine_no_delete BEFORE DELETE ON barecount.quarantine
    FOR EACH ROW EXECUTE FUNCTION barecount._refuse_write('quarantined rows are never deleted', 'Replay them once the contract or data is fixed.');
COMMENT ON TRIGGER quarantine_no_delete ON barecount.quarantine IS 'Refuses DELETE: quarantined rows wait for replay, never disappear';
-- the batch, of the same tenant (and so the tenant): checked once per statement
CREATE TRIGGER quarantine_batch_exists AFTER INSERT ON barecount.quarantine
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION barecount._raw_batches_exist();
COMMENT ON TRIGGER quarantine_batch_exists ON barecount.quarantine IS 'Refuses rows whose batch does not exist for their tenant (23503), once per statement';

-- The evidence ledger is in ledger.sql: its columns are computed by BareCount functions.

-- Published store catalog ----------------------------------------------------------------------
CREATE TABLE barecount.datasets (
    tenant_id      text NOT NULL REFERENCES barecount.tenants,
    dataset        text NOT NULL,
    latest_version integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dataset)
);
COMMENT ON TABLE barecount.datasets IS 'Published datasets and their latest version';

CREATE TABLE barecount.dataset_versions (
    tenant_id    text NOT NULL,
    dataset      text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    relation     text NOT NULL UNIQUE,
    source       text NOT NULL,
    columns      jsonb NOT NULL,
    row_count    bigint NOT NULL,
    bytes        bigint NOT NULL,
    content_hash text NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deprecated', 'retired')),
    published_by text NOT NULL DEFAULT session_user,
    published_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq   bigint NOT NULL,
    PRIMARY KEY (tenant_id, dataset, version),
    FOREIGN KEY (tenant_id, dataset) REFERENCES barecount.datasets
);
COMMENT ON TABLE barecount.dataset_versions IS
    'Immutable published versions: relation, column schema, row count, bytes, content hash (barecount-content-v1) and ledger receipt';

-- JSON Schema resources: schemas that $refs resolve to, by URI, per tenant (never fetched
-- over the network). Runs after tenancy.sql.
CREATE TABLE barecount.json_schema_resources (
    tenant_id     text NOT NULL REFERENCES barecount.tenants,
    uri           text NOT NULL CHECK (uri !~ '#'),
    schema        jsonb NOT NULL,
    registered_by name NOT NULL DEFAULT session_user,
    registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, uri)
);
COMMENT ON TABLE barecount.json_schema_resources IS
    'Schemas that $ref URIs resolve to (e.g. http://localhost:1234/integer.json), per tenant; BareCount never fetches schemas over the network';
SELECT barecount._protect_table('barecount.json_schema_resources');
REVOKE ALL ON barecount.json_schema_resources FROM PUBLIC;
GRANT SELECT ON barecount.json_schema_resources TO barecount_engineer;

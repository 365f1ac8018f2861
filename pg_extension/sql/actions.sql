-- Actions: anomalies seen, the action catalog, playbooks and their decisions, deliveries and
-- their attempts, and the encrypted secrets they use.

-- The anomalies each KPI's detector has reported (so each is an event once).
CREATE TABLE barecount.kpi_anomaly_state (
    tenant_id   text NOT NULL REFERENCES barecount.tenants,
    kpi         text NOT NULL,
    measure     text NOT NULL,
    period      text NOT NULL,
    dims        jsonb NOT NULL,
    value       float8 NOT NULL,
    expected    float8 NOT NULL,
    score       float8 NOT NULL,
    method      text NOT NULL,
    event_id    bigint NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kpi, measure, period, dims)
);
COMMENT ON TABLE barecount.kpi_anomaly_state IS 'Anomalies a KPI''s detector has reported, once each (period, dimension values), with the event that reported them';

CREATE TABLE barecount.actions (
    tenant_id   text NOT NULL REFERENCES barecount.tenants,
    name        text NOT NULL,
    version     integer NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('webhook', 'sql', 'notify', 'export')),
    config      jsonb NOT NULL,
    defined_by  name NOT NULL DEFAULT session_user,
    defined_at  timestamptz NOT NULL DEFAULT now(),
    ledger_seq  bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.actions IS 'The action catalog: versioned webhook, sql, notify and export actions per tenant (secrets are kept apart, encrypted)';

CREATE TABLE barecount.playbooks (
    tenant_id     text NOT NULL REFERENCES barecount.tenants,
    name          text NOT NULL,
    version       integer NOT NULL,
    triggers      text[] NOT NULL,
    conditions    jsonb NOT NULL,
    actions       text[] NOT NULL,
    dedup_window  interval NOT NULL,
    cooldown      interval NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    defined_by    name NOT NULL DEFAULT session_user,
    defined_at    timestamptz NOT NULL DEFAULT now(),
    ledger_seq    bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.playbooks IS 'Playbooks: which events (triggers), under which conditions, fire which actions, with a de-duplication window and a cool-down; versioned';

CREATE TABLE barecount.playbook_decisions (
    tenant_id        text NOT NULL REFERENCES barecount.tenants,
    decision_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    playbook         text NOT NULL,
    playbook_version integer NOT NULL,
    event_id         bigint NOT NULL,
    trigger          text NOT NULL,
    dedup_key        text NOT NULL,
    decision         text NOT NULL CHECK (decision IN ('fired', 'suppressed')),
    reason           text NOT NULL,
    deliveries       bigint[] NOT NULL DEFAULT '{}',
    ledger_seq       bigint NOT NULL,
    decided_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE barecount.playbook_decisions IS 'Every playbook decision on an event: fired (with the deliveries it made) or suppressed (and why), each with its ledger receipt';
CREATE INDEX playbook_decisions_dedup ON barecount.playbook_decisions (tenant_id, playbook, dedup_key, decided_at) WHERE decision = 'fired';
CREATE INDEX playbook_decisions_fired ON barecount.playbook_decisions (tenant_id, playbook, decided_at) WHERE decision = 'fired';

CREATE TABLE barecount.deliveries (
    tenant_id       text NOT NULL REFERENCES barecount.tenants,
    delivery_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      text NOT NULL UNIQUE,
    action          text NOT NULL,
    action_version  integer NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('webhook', 'sql', 'notify', 'export')),
    playbook        text,
    event_id        bigint,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    schedule_from   integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until     timestamptz,
    leased_by       text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    ledger_seq      bigint
);
COMMENT ON TABLE barecount.deliveries IS 'Deliveries of actions: pending (due at next_attempt_at, leased to a worker until lease_until), delivered or dead (a dead letter, replayable); webhook_id is stable across attempts so receivers can de-duplicate';
CREATE INDEX deliveries_due ON barecount.deliveries (next_attempt_at) WHERE state = 'pending' AND kind IN ('webhook', 'export');
CREATE INDEX deliveries_tenant ON barecount.deliveries (tenant_id, delivery_id);

CREATE TABLE barecount.delivery_attempts (
    tenant_id    text NOT NULL REFERENCES barecount.tenants,
    delivery_id  bigint NOT NULL REFERENCES barecount.deliveries,
    attempt      integer NOT NULL,
    worker       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code  integer,
    outcome      text NOT NULL CHECK (outcome IN ('status', 'timeout', 'connection', 'error')),
    error        text,
    applied      boolean NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
COMMENT ON TABLE barecount.delivery_attempts IS 'Every attempt of every delivery: worker, times, HTTP status or failure; applied is false for a late report from a worker whose lease had passed';

-- Secrets: never granted to any role but their owner. A tenant's data-encryption key is kept
-- wrapped by the operator's key (barecount.secrets_keyring); each secret sealed by that key.
CREATE TABLE barecount.tenant_keys (
    tenant_id     text PRIMARY KEY REFERENCES barecount.tenants,
    kek_id        text NOT NULL,
    wrapped_dek   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz
);
COMMENT ON TABLE barecount.tenant_keys IS 'Per tenant: its data-encryption key, wrapped (AES-256-GCM) by the operator''s key kek_id; never readable by tenant roles';

CREATE TABLE barecount.secrets (
    tenant_id    text NOT NULL REFERENCES barecount.tenants,
    secret_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    purpose      text NOT NULL CHECK (purpose IN ('signing', 'credential')),
    sealed       bytea NOT NULL,
    fingerprint  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz
);
COMMENT ON TABLE barecount.secrets IS 'Secrets sealed (AES-256-GCM) by their tenant''s data-encryption key: webhook signing secrets per action (an old one signs until expires_at during a rotation) and credentials; never readable by tenant roles';
CREATE INDEX secrets_name ON barecount.secrets (tenant_id, purpose, name);

SELECT barecount._protect_table(t::regclass) FROM unnest(ARRAY[
    'barecount.kpi_anomaly_state', 'barecount.actions', 'barecount.playbooks', 'barecount.playbook_decisions',
    'barecount.deliveries', 'barecount.delivery_attempts', 'barecount.tenant_keys', 'barecount.secrets']) t;
REVOKE ALL ON barecount.kpi_anomaly_state, barecount.actions, barecount.playbooks, barecount.playbook_decisions,
              barecount.deliveries, barecount.delivery_attempts, barecount.tenant_keys, barecount.secrets FROM PUBLIC;
GRANT SELECT ON barecount.kpi_anomaly_state, barecount.actions, barecount.playbooks, barecount.playbook_decisions,
                barecount.deliveries, barecount.delivery_attempts
    TO barecount_engineer, barecount_publisher;

-- What a tenant may know of its secrets: names, fingerprints and dates, never the values.
CREATE VIEW barecount.secrets_list WITH (security_barrier) AS
    SELECT name, purpose, fingerprint, created_at, expires_at FROM barecount.secrets
     WHERE tenant_id = (SELECT barecount.current_tenant());
COMMENT ON VIEW barecount.secrets_list IS 'The current tenant''s secrets: name, purpose (signing or credential), fingerprint (first 8 bytes of SHA-256 of the value, hex) and dates; never the values';
REVOKE ALL ON barecount.secrets_list FROM PUBLIC;
GRANT SELECT ON barecount.secrets_list TO barecount_engineer, barecount_publisher;

-- Every event the outbox receives goes past the playbooks, in the transaction that wrote it.
CREATE FUNCTION barecount._events_fire() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM barecount._playbooks_fire(array_agg(f.event_id ORDER BY f.event_id)) FROM fresh f HAVING count(*) > 0;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION barecount._events_fire() IS
    'Internal trigger: hands the events a statement added to the outbox to the playbooks (barecount._playbooks_fire)';
REVOKE ALL ON FUNCTION barecount._events_fire() FROM PUBLIC;
CREATE TRIGGER events_playbooks AFTER INSERT ON barecount.events
    REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION barecount._events_fire();
COMMENT ON TRIGGER events_playbooks ON barecount.events IS 'BareCount: the playbooks decide on every event in the transaction that wrote it';

-- The delivery worker's claim: due webhook deliveries of every tenant, leased to the worker
-- (FOR UPDATE SKIP LOCKED: concurrent workers never take the same one), with what it needs to
-- sign them: the tenant's wrapped key and the action's sealed signing secrets.
CREATE FUNCTION barecount.gateway_deliveries_claim(worker text, max_deliveries integer DEFAULT 100,
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
COMMENT ON FUNCTION barecount.gateway_deliveries_claim(text, integer, interval) IS
    'For the delivery worker (a member of barecount_admin): lease up to max_deliveries due webhook and export deliveries (FOR UPDATE SKIP LOCKED; a lease that passes makes the delivery due again, same webhook_id), with the sealed secrets to sign them';
REVOKE ALL ON FUNCTION barecount.gateway_deliveries_claim(text, integer, interval) FROM PUBLIC;

-- Pipelines: versioned definitions, runs and their steps, connector reads, and the events
-- outbox with its consumer API. Written only by BareCount (privileged sections and the
-- SECURITY DEFINER functions below); tenants read their own rows.

CREATE TABLE barecount.pipelines (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    name       text NOT NULL,
    version    integer NOT NULL,
    spec       jsonb NOT NULL,
    defined_by name NOT NULL DEFAULT session_user,
    defined_at timestamptz NOT NULL DEFAULT now(),
    ledger_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
COMMENT ON TABLE barecount.pipelines IS 'Pipeline definitions (steps from a source to published data, calendar grain, retry policy), versioned; the latest version runs';

CREATE TABLE barecount.pipeline_runs (
    tenant_id       text NOT NULL REFERENCES barecount.tenants,
    run_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline        text NOT NULL,
    version         integer NOT NULL,
    idempotency_key text,
    period_from     date NOT NULL,
    period_to       date NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    trigger         text NOT NULL CHECK (trigger IN ('manual', 'schedule', 'resume')),
    started_by      name NOT NULL DEFAULT session_user,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    failed_step     text,
    error_sqlstate  text,
    error_message   text,
    ledger_seq      bigint,
    UNIQUE (tenant_id, pipeline, idempotency_key),
    FOREIGN KEY (tenant_id, pipeline, version) REFERENCES barecount.pipelines
);
COMMENT ON TABLE barecount.pipeline_runs IS 'One row per pipeline run: periods asked, status, who and when, the failed step and its error (SQLSTATE); an idempotency key names one run only';
CREATE INDEX pipeline_runs_page ON barecount.pipeline_runs (tenant_id, pipeline, run_id DESC);

CREATE TABLE barecount.pipeline_run_steps (
    tenant_id      text NOT NULL REFERENCES barecount.tenants,
    run_id         bigint NOT NULL REFERENCES barecount.pipeline_runs,
    step           text NOT NULL,
    ordinal        integer NOT NULL,
    kind           text NOT NULL,
    status         text NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'warned')),
    attempts       integer NOT NULL DEFAULT 0,
    rows_in        bigint,
    rows_out       bigint,
    started_at     timestamptz,
    finished_at    timestamptz,
    error_sqlstate text,
    error_message  text,
    attempt_errors jsonb NOT NULL DEFAULT '[]',
    receipts       bigint[] NOT NULL DEFAULT '{}',
    note           text,
    ledger_seq     bigint,
    PRIMARY KEY (run_id, step)
);
COMMENT ON TABLE barecount.pipeline_run_steps IS 'Each step of each run: status, attempts (with every failed attempt''s SQLSTATE and message), rows in and out, timings, the ledger receipts the step wrote';

-- What each connector read, so the same input is recognised and not ingested twice.
CREATE TABLE barecount.connector_reads (
    tenant_id   text NOT NULL REFERENCES barecount.tenants,
    dataset     text NOT NULL,
    source      text NOT NULL,
    fingerprint text NOT NULL,
    row_count   bigint NOT NULL,
    batch_id    bigint NOT NULL,
    run_id      bigint,
    read_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dataset, source, fingerprint)
);
COMMENT ON TABLE barecount.connector_reads IS 'Inputs connectors have landed (source, SHA-256 of the rows or file read, row count, batch): a rerun of the same input is recognised and skipped';

-- The events outbox.
CREATE TABLE barecount.events (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('run_started', 'run_finished', 'run_failed', 'publish', 'quarantine',
                                             'quarantine_threshold', 'threshold', 'hook', 'anomaly', 'forecast')),
    subject    text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE barecount.events IS 'Outbox of platform events (runs started, finished and failed, publishes, quarantines, thresholds, pipeline hooks, KPI anomalies and forecast threshold crossings); playbooks decide on each as it is written; consumed with events_claim/events_ack, each also sent on NOTIFY barecount_events';
CREATE INDEX events_tenant ON barecount.events (tenant_id, event_id);

CREATE TABLE barecount.event_consumers (
    tenant_id  text NOT NULL REFERENCES barecount.tenants,
    consumer   text NOT NULL,
    high_water bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, consumer)
);
COMMENT ON TABLE barecount.event_consumers IS 'Consumers of the events outbox and the last event each has been offered';

CREATE TABLE barecount.event_claims (
    tenant_id  text NOT NULL,
    consumer   text NOT NULL,
    event_id   bigint NOT NULL REFERENCES barecount.events,
    attempts   integer NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL DEFAULT '-infinity',
    acked_at   timestamptz,
    PRIMARY KEY (tenant_id, consumer, event_id),
    FOREIGN KEY (tenant_id, consumer) REFERENCES barecount.event_consumers
);
COMMENT ON TABLE barecount.event_claims IS 'Per consumer and event: deliveries so far, when it may be claimed again (visibility timeout) and when it was acknowledged';
CREATE INDEX event_claims_due ON barecount.event_claims (tenant_id, consumer, event_id) WHERE acked_at IS NULL;

SELECT barecount._protect_table(t::regclass) FROM unnest(ARRAY[
    'barecount.pipelines', 'barecount.pipeline_runs', 'barecount.pipeline_run_steps', 'barecount.connector_reads',
    'barecount.events', 'barecount.event_consumers', 'barecount.event_claims']) t;
REVOKE ALL ON barecount.pipelines, barecount.pipeline_runs, barecount.pipeline_run_steps, barecount.connector_reads,
              barecount.events, barecount.event_consumers, barecount.event_claims FROM PUBLIC;
GRANT SELECT ON barecount.pipelines, barecount.pipeline_runs, barecount.pipeline_run_steps, barecount.connector_reads,
                barecount.events, barecount.event_consumers, barecount.event_claims
    TO barecount_engineer, barecount_publisher;

-- Appends an event and wakes listeners. Called by BareCount's own privileged code only. LISTEN
-- is open to every role, so the channel carries a wake-up and no tenant data: consumers read
-- what is new through events_claim.
CREATE FUNCTION barecount._event_emit(tenant text, kind text, subject text, payload jsonb) RETURNS bigint
    LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH e AS (INSERT INTO barecount.events (tenant_id, kind, subject, payload)
               VALUES (tenant, kind, subject, coalesce(payload, '{}')) RETURNING event_id)
    SELECT event_id FROM e, LATERAL (SELECT pg_notify('barecount_events', '')) n
$$;
COMMENT ON FUNCTION barecount._event_emit(text, text, text, jsonb) IS
    'Internal: append an event to the outbox and NOTIFY barecount_events (a wake-up, no data; BareCount''s own code only)';

-- Claims up to max_events of the current tenant's events that the consumer has not
-- acknowledged and that are not claimed by another call within the visibility timeout.
-- Concurrent calls for one consumer never claim the same event (FOR UPDATE SKIP LOCKED);
-- an event claimed and not acknowledged within the timeout is delivered again.
CREATE FUNCTION barecount.events_claim(consumer text, max_events integer DEFAULT 100,
                                       visibility interval DEFAULT '30 seconds')
    RETURNS TABLE (event_id bigint, kind text, subject text, payload jsonb, created_at timestamptz, delivery integer)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    t text := barecount.current_tenant();
    hw bigint;
BEGIN
    IF t IS NULL THEN
        RAISE EXCEPTION 'events_claim: the session has no BareCount tenant' USING ERRCODE = '42501';
    END IF;
    IF consumer IS NULL OR consumer !~ '^[a-z][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'events_claim: consumer name % is invalid', coalesce(quote_literal(consumer), 'NULL')
            USING ERRCODE = '22023', HINT = 'A consumer is named by 1 to 63 lower-case letters, digits, _, . or -, starting with a letter.';
    END IF;
    IF max_events IS NULL OR max_events < 1 OR max_events > 10000 THEN
        RAISE EXCEPTION 'events_claim: max_events must be from 1 to 10000, not %', max_events USING ERRCODE = '22023';
    END IF;
    IF visibility IS NULL OR visibility < interval '1 second' OR visibility > interval '1 day' THEN
        RAISE EXCEPTION 'events_claim: the visibility timeout must be from 1 second to 1 day, not %', visibility
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO barecount.event_consumers AS c (tenant_id, consumer) VALUES (t, events_claim.consumer)
        ON CONFLICT DO NOTHING;
    -- one call at a time offers new events to the consumer; the others claim what is offered
    SELECT c.high_water INTO hw FROM barecount.event_consumers c
     WHERE c.tenant_id = t AND c.consumer = events_claim.consumer FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        WITH fresh AS (
            INSERT INTO barecount.event_claims (tenant_id, consumer, event_id)
            SELECT t, events_claim.consumer, e.event_id FROM barecount.events e
             WHERE e.tenant_id = t AND e.event_id > hw ORDER BY e.event_id LIMIT 100000
            ON CONFLICT DO NOTHING RETURNING event_claims.event_id)
        UPDATE barecount.event_consumers c SET high_water = greatest(hw, (SELECT max(f.event_id) FROM fresh f))
         WHERE c.tenant_id = t AND c.consumer = events_claim.consumer AND EXISTS (SELECT 1 FROM fresh);
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT ec.event_id FROM barecount.event_claims ec
         WHERE ec.tenant_id = t AND ec.consumer = events_claim.consumer AND ec.acked_at IS NULL
           AND ec.visible_at <= clock_timestamp()
         ORDER BY ec.event_id LIMIT max_events
         FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE barecount.event_claims ec
           SET visible_at = clock_timestamp() + visibility, attempts = ec.attempts + 1
          FROM due WHERE ec.tenant_id = t AND ec.consumer = events_claim.consumer AND ec.event_id = due.event_id
        RETURNING ec.event_id, ec.attempts)
    SELECT e.event_id, e.kind, e.subject, e.payload, e.created_at, claimed.attempts
      FROM claimed JOIN barecount.events e ON e.tenant_id = t AND e.event_id = claimed.event_id
     ORDER BY e.event_id;
END
$$;
COMMENT ON FUNCTION barecount.events_claim(text, integer, interval) IS
    'Claim up to max_events unacknowledged events of the current tenant for a consumer (FOR UPDATE SKIP LOCKED: concurrent claimers never get the same event); unacknowledged ones are delivered again after the visibility timeout';

CREATE FUNCTION barecount.events_ack(consumer text, event_ids bigint[]) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE n integer;
BEGIN
    IF event_ids IS NULL OR cardinality(event_ids) > 10000 THEN
        RAISE EXCEPTION 'events_ack: give 0 to 10000 event ids' USING ERRCODE = '22023';
    END IF;
    UPDATE barecount.event_claims ec SET acked_at = clock_timestamp()
     WHERE ec.tenant_id = barecount.current_tenant() AND ec.consumer = events_ack.consumer
       AND ec.event_id = ANY (event_ids) AND ec.acked_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION barecount.events_ack(text, bigint[]) IS
    'Acknowledge claimed events for a consumer: they are not delivered to it again. Returns how many were newly acknowledged';

-- Keyset paging over run history, newest first: pass the last run_id of a page as the cursor.
CREATE FUNCTION barecount.pipeline_runs_page(pipeline text DEFAULT NULL, before_run_id bigint DEFAULT NULL,
                                             page_size integer DEFAULT 50)
    RETURNS SETOF barecount.pipeline_runs
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 1000 THEN
        RAISE EXCEPTION 'pipeline_runs_page: page_size must be from 1 to 1000, not %', page_size USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT r.* FROM barecount.pipeline_runs r
     WHERE (pipeline_runs_page.pipeline IS NULL OR r.pipeline = pipeline_runs_page.pipeline)
       AND (before_run_id IS NULL OR r.run_id < before_run_id)
     ORDER BY r.run_id DESC LIMIT page_size;
END
$$;
COMMENT ON FUNCTION barecount.pipeline_runs_page(text, bigint, integer) IS
    'The current tenant''s pipeline runs, newest first, a page at a time: pass the last run_id of a page as before_run_id for the next (keyset paging)';

-- 002: state-machine guards, the durable event outbox and the job rollup.
--
-- Every change of (current_step, status) on jobs_variants or jobs, including INSERT, appends a
-- row to pipeline_events in the same transaction and sends a NOTIFY carrying the event id. The
-- NOTIFY is only a wake-up hint (lost when nobody listens); the outbox row is the record.
-- Readers page through the outbox by (xid, id), reading only below the oldest transaction still
-- in flight (variant_pipeline/outbox.py), so a late commit can never be skipped.

-- Who made a change: writers run `SET LOCAL variant_pipeline.origin = 'dagster-run:<id>'`.
CREATE FUNCTION vp_change_origin() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('variant_pipeline.origin', true), ''), 'external')
$$;

CREATE FUNCTION vp_is_terminal(p_level text, p_step text, p_status text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_status = 'failed' OR (p_status = 'done' AND p_step = vp_last_stage(p_level))
$$;

-- BEFORE INSERT/UPDATE on jobs and jobs_variants: the step must belong to the row's level
-- (a variant is never at a job-level stage), updated_at follows every update, and the timings
-- follow the state, whoever writes it.
CREATE FUNCTION vp_guard_state() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_level  text := CASE TG_TABLE_NAME WHEN 'jobs_variants' THEN 'variant' ELSE 'job' END;
    step_level text;
BEGIN
    SELECT level INTO step_level FROM pipeline_stages WHERE name = NEW.current_step;
    -- (An unknown step has no level; its foreign key reports it.)
    IF row_level = 'variant' AND step_level <> 'variant' THEN
        RAISE EXCEPTION 'jobs_variants.current_step % is not a variant-level stage', NEW.current_step
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    IF TG_OP = 'INSERT'
       OR OLD.current_step IS DISTINCT FROM NEW.current_step
       OR OLD.status IS DISTINCT FROM NEW.status THEN
        IF NEW.status <> 'queued' AND NEW.started_at IS NULL THEN
            NEW.started_at := now();
        END IF;
        IF vp_is_terminal(row_level, NEW.current_step, NEW.status) THEN
            NEW.finished_at := now();
        ELSE
            NEW.finished_at := NULL;  -- retried or moved on: not finished any more
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_guard_state BEFORE INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION vp_guard_state();
CREATE TRIGGER jobs_variants_guard_state BEFORE INSERT OR UPDATE ON jobs_variants
    FOR EACH ROW EXECUTE FUNCTION vp_guard_state();

CREATE FUNCTION vp_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['detection_runs', 'planner_proposals', 'overlay_layouts', 'vlm_traces',
                             'evaluations', 'llm_traces', 'ad_copies', 'instagram_feeds'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION vp_touch_updated_at()',
                       t || '_touch_updated_at', t);
    END LOOP;
END
$$;

-- The outbox -------------------------------------------------------------------------------

CREATE TABLE pipeline_events (
    id              bigserial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction's id. Ids from the sequence are not commit-ordered; xid lets a
    -- reader stay below every transaction still in flight (see outbox.py).
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind            text NOT NULL CHECK (kind IN ('variant', 'job')),
    job_variants_id uuid,
    job_id          uuid NOT NULL,
    tenant_id       text NOT NULL,
    old_step        text,
    old_status      text,
    new_step        text NOT NULL,
    new_status      text NOT NULL,
    error           text,
    origin          text NOT NULL,
    CHECK ((kind = 'variant') = (job_variants_id IS NOT NULL))
);
-- No foreign keys: the outbox is a log and outlives the rows it describes.
CREATE INDEX pipeline_events_xid_id_idx ON pipeline_events (xid, id);
CREATE INDEX pipeline_events_job_idx ON pipeline_events (job_id, id);

-- The job rollup (the original's check_all_variants_done, made race-free: two
-- variants finishing at once could each miss the other and leave the job unfinished).
-- Called after a variant's state changed. Lock the job row first, then count in a separate
-- statement: under READ COMMITTED that statement takes a fresh snapshot after the lock wait,
-- so of two variants finishing concurrently, the second to get the lock sees the first.
-- The job row is always written while the job is in its variant phase (at least updated_at):
-- under REPEATABLE READ or SERIALIZABLE the second finisher then fails with a serialization
-- error (and retries) instead of counting from a stale snapshot.
CREATE FUNCTION vp_rollup_job(p_job_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    job          record;
    first_step   text := vp_first_stage('variant');
    last_step    text := vp_last_stage('variant');
    n_existing   integer;
    n_terminal   integer;
    n_succeeded  integer;
    n_started    integer;
    least_step   text;
    new_step     text;
    new_status   text;
    new_error    text;
BEGIN
    SELECT j.current_step, j.status, j.expected_variants, j.error, s.level
      INTO job
      FROM jobs j JOIN pipeline_stages s ON s.name = j.current_step
     WHERE j.job_id = p_job_id
       FOR NO KEY UPDATE OF j;
    -- Gone, or moved on to its job-level stages: the variants no longer decide its state.
    IF NOT FOUND OR job.level <> 'variant' THEN
        RETURN;
    END IF;

    SELECT count(*),
           count(*) FILTER (WHERE v.status = 'failed' OR (v.current_step = last_step AND v.status = 'done')),
           count(*) FILTER (WHERE v.current_step = last_step AND v.status = 'done'),
           count(*) FILTER (WHERE NOT (v.current_step = first_step AND v.status = 'queued'))
      INTO n_existing, n_terminal, n_succeeded, n_started
      FROM jobs_variants v
     WHERE v.job_id = p_job_id;

    IF n_existing >= job.expected_variants AND n_terminal = n_existing THEN
        new_step := last_step;
        IF n_succeeded > 0 THEN
            new_status := 'done';
        ELSE
            new_status := 'failed';
            new_error := format('all %s variants failed', n_existing);
        END IF;
    ELSIF n_started > 0 THEN
        SELECT v.current_step INTO least_step
          FROM jobs_variants v JOIN pipeline_stages s ON s.name = v.current_step
         WHERE v.job_id = p_job_id
           AND NOT (v.status = 'failed' OR (v.current_step = last_step AND v.status = 'done'))
         ORDER BY s.position
         LIMIT 1;
        -- All existing variants finished but more are expected: the missing ones start at the first stage.
        new_step := coalesce(least_step, first_step);
        new_status := 'running';
    ELSIF job.status IN ('done', 'failed') THEN
        -- Nothing started, yet the job looks finished: a variant was reset for a retry.
        new_step := first_step;
        new_status := 'queued';
    ELSE
        new_step := job.current_step;  -- nothing started yet: leave the state as it is
        new_status := job.status;
        new_error := job.error;
    END IF;

    IF new_step IS DISTINCT FROM job.current_step OR new_status IS DISTINCT FROM job.status THEN
        UPDATE jobs SET current_step = new_step, status = new_status, error = new_error
         WHERE job_id = p_job_id;
    ELSE
        UPDATE jobs SET updated_at = now() WHERE job_id = p_job_id;
    END IF;
END
$$;

CREATE FUNCTION vp_variant_state_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    job_tenant text;
    event_id   bigint;
BEGIN
    SELECT tenant_id INTO job_tenant FROM jobs WHERE job_id = NEW.job_id;
    INSERT INTO pipeline_events (kind, job_variants_id, job_id, tenant_id, old_step, old_status,
                                 new_step, new_status, error, origin)
    VALUES ('variant', NEW.job_variants_id, NEW.job_id, job_tenant,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.current_step END,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.current_step, NEW.status, NEW.error, vp_change_origin())
    RETURNING id INTO event_id;
    PERFORM pg_notify('job_variant_state_changed', json_build_object(
        'event_id', event_id, 'kind', 'variant', 'job_id', NEW.job_id,
        'job_variants_id', NEW.job_variants_id, 'tenant_id', job_tenant,
        'step', NEW.current_step, 'status', NEW.status)::text);
    PERFORM vp_rollup_job(NEW.job_id);
    RETURN NULL;
END
$$;

CREATE FUNCTION vp_job_state_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
BEGIN
    INSERT INTO pipeline_events (kind, job_variants_id, job_id, tenant_id, old_step, old_status,
                                 new_step, new_status, error, origin)
    VALUES ('job', NULL, NEW.job_id, NEW.tenant_id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.current_step END,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.current_step, NEW.status, NEW.error, vp_change_origin())
    RETURNING id INTO event_id;
    PERFORM pg_notify('job_state_changed', json_build_object(
        'event_id', event_id, 'kind', 'job', 'job_id', NEW.job_id, 'tenant_id', NEW.tenant_id,
        'step', NEW.current_step, 'status', NEW.status)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_variants_state_inserted AFTER INSERT ON jobs_variants
    FOR EACH ROW EXECUTE FUNCTION vp_variant_state_changed();
CREATE TRIGGER jobs_variants_state_updated AFTER UPDATE ON jobs_variants
    FOR EACH ROW
    WHEN (OLD.current_step IS DISTINCT FROM NEW.current_step OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION vp_variant_state_changed();
CREATE TRIGGER jobs_state_inserted AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION vp_job_state_changed();
CREATE TRIGGER jobs_state_updated AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (OLD.current_step IS DISTINCT FROM NEW.current_step OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION vp_job_state_changed();

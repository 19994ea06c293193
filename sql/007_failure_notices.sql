-- 007: a notice for every variant or job that fails for good, for the failure webhook.
--
-- A row that turns `failed` (bad input, or its retry budget spent: retries in between are
-- `queued`) gets one notice, written by the same transaction as the failure, so none is lost and
-- none is made twice. The failure notice sensor posts the due ones to VP_ALERT_WEBHOOK_URL, a burst
-- as one message, and records the outcome: `sent_at` once the endpoint took it, or the try count,
-- the error and when to try again.

CREATE TABLE failure_notices (
    notice_id       bigserial PRIMARY KEY,
    level           text NOT NULL CHECK (level IN ('variant', 'job')),
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    job_variants_id uuid REFERENCES jobs_variants (job_variants_id) ON DELETE CASCADE,
    stage           text NOT NULL,
    reason          text,
    attempts        integer NOT NULL,
    run_id          text,
    failed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Delivery: 'pending' until sent; 'sent' when the endpoint answered 2xx; 'unsent' when no
    -- webhook was configured at the time (nothing is sent later for it).
    delivery        text NOT NULL DEFAULT 'pending' CHECK (delivery IN ('pending', 'sent', 'unsent')),
    tries           integer NOT NULL DEFAULT 0,
    next_try_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text,
    delivered_at    timestamptz,
    CHECK ((level = 'variant') = (job_variants_id IS NOT NULL))
);
CREATE INDEX failure_notices_pending_idx ON failure_notices (next_try_at) WHERE delivery = 'pending';
CREATE INDEX failure_notices_job_idx ON failure_notices (job_id);

CREATE FUNCTION vp_note_variant_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failure_notices (level, job_id, job_variants_id, stage, reason, attempts, run_id)
    VALUES ('variant', NEW.job_id, NEW.job_variants_id, NEW.current_step, NEW.error, NEW.attempt, NEW.run_id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION vp_note_job_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failure_notices (level, job_id, stage, reason, attempts, run_id)
    VALUES ('job', NEW.job_id, NEW.current_step, NEW.error, NEW.attempt, NEW.run_id);
    RETURN NULL;
END;
$$;

-- A row written `failed` again while already failed (its error text amended) is no new failure.
CREATE TRIGGER jobs_variants_failure_notice
    AFTER UPDATE OF status ON jobs_variants
    FOR EACH ROW WHEN (NEW.status = 'failed' AND OLD.status <> 'failed') EXECUTE FUNCTION vp_note_variant_failure();
CREATE TRIGGER jobs_variants_inserted_failed_notice
    AFTER INSERT ON jobs_variants
    FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION vp_note_variant_failure();
CREATE TRIGGER jobs_failure_notice
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'failed' AND OLD.status <> 'failed') EXECUTE FUNCTION vp_note_job_failure();
CREATE TRIGGER jobs_inserted_failed_notice
    AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION vp_note_job_failure();

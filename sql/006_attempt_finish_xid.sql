-- 006: which transaction ended each stage attempt, so a metrics reader counts every ending once.
--
-- `variant-pipeline metrics` keeps running totals of attempt outcomes and durations. It reads
-- the attempts that ended since its last scrape; attempt ids and end times are not commit-ordered
-- (an attempt that ended earlier can commit later), so a reader that moved on by id or by time
-- could skip one. As with the outbox, the ending transaction's id is recorded, and the reader only
-- takes endings below the oldest transaction still in flight: nothing can commit below that
-- later. Attempts that ended before this migration keep NULL: the reader counts from its start on.

ALTER TABLE stage_attempts
    ADD COLUMN finished_xid xid8;

CREATE FUNCTION vp_stamp_attempt_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.outcome <> 'running' AND (TG_OP = 'INSERT' OR OLD.outcome = 'running') THEN
        NEW.finished_xid := pg_current_xact_id();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER stage_attempts_finish_xid
    BEFORE INSERT OR UPDATE OF outcome ON stage_attempts
    FOR EACH ROW EXECUTE FUNCTION vp_stamp_attempt_finish();

CREATE INDEX stage_attempts_finished_xid_idx ON stage_attempts (finished_xid);

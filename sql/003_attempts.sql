-- 003: attempts, claims and retries.
--
-- Every try at a stage for one partition (a variant, or a job for its job-level stages) is a row
-- in stage_attempts: when, which Dagster run, which worker process, how it ended, and why.
-- The partition row carries the attempt in progress (attempt, run_id): the fence that lets only
-- the current attempt write a stage's outputs. While a worker runs a stage it holds a session
-- advisory lock on the partition (variant_pipeline/claims.py), so a second worker cannot start
-- the same stage, and a worker that dies (SIGKILL, lost connection, server restart) releases it:
-- the recovery sensor takes such a lock free-and-running row as "worker lost".

ALTER TABLE jobs_variants
    ADD COLUMN attempt  integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    ADD COLUMN run_id   text,
    -- Set while (step, queued) waits for an automatic retry: not before this time.
    ADD COLUMN retry_at timestamptz;
ALTER TABLE jobs
    ADD COLUMN attempt  integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    ADD COLUMN run_id   text,
    ADD COLUMN retry_at timestamptz;

CREATE TABLE stage_attempts (
    attempt_id      bigserial PRIMARY KEY,
    level           text NOT NULL CHECK (level IN ('variant', 'job')),
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    job_variants_id uuid REFERENCES jobs_variants (job_variants_id) ON DELETE CASCADE,
    stage           text NOT NULL REFERENCES pipeline_stages (name),
    -- 1 for the first try in a round; a manual retry starts a new round at 1 again.
    attempt         integer NOT NULL CHECK (attempt >= 1),
    run_id          text,
    origin          text NOT NULL,
    worker          text,  -- host:pid of the process that ran it
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- running: in progress; done; failed (the stage raised or timed out); lost (its worker died
    -- before finishing, seen by recovery); superseded (its worker lost the partition to another
    -- attempt before it could write, and wrote nothing).
    outcome         text NOT NULL DEFAULT 'running'
                    CHECK (outcome IN ('running', 'done', 'failed', 'lost', 'superseded')),
    error           text,
    -- For failed and lost attempts: whether another attempt was scheduled.
    will_retry      boolean,
    CHECK ((level = 'variant') = (job_variants_id IS NOT NULL)),
    CHECK ((outcome = 'running') = (finished_at IS NULL))
);
CREATE INDEX stage_attempts_variant_idx ON stage_attempts (job_variants_id, attempt_id);
CREATE INDEX stage_attempts_job_idx ON stage_attempts (job_id, attempt_id);
CREATE INDEX stage_attempts_running_idx ON stage_attempts (outcome) WHERE outcome = 'running';
CREATE INDEX jobs_variants_retry_idx ON jobs_variants (retry_at) WHERE retry_at IS NOT NULL;

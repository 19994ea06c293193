-- 001: the data model. Pipeline state lives in jobs / jobs_variants as (current_step, status);
-- stage outputs are keyed per variant (the original keyed some by job, so variants of one job
-- read each other's answers) with at most one current answer per (variant, kind), so
-- re-running a stage replaces its answer instead of adding a second one.
--
-- Stage names are not listed here: `variant-pipeline db upgrade` fills pipeline_stages from
-- variant_pipeline/stages.py after the migrations, and every step column references it.

CREATE TABLE pipeline_stages (
    name     text PRIMARY KEY,
    -- Deferrable so the sync can reorder stages inside one transaction.
    position integer NOT NULL UNIQUE DEFERRABLE INITIALLY DEFERRED,
    level    text NOT NULL CHECK (level IN ('variant', 'job'))
);

-- The first stage of a level: the default step of new rows, derived, never spelled out.
CREATE FUNCTION vp_first_stage(p_level text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT name FROM pipeline_stages WHERE level = p_level ORDER BY position LIMIT 1
$$;

CREATE FUNCTION vp_last_stage(p_level text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT name FROM pipeline_stages WHERE level = p_level ORDER BY position DESC LIMIT 1
$$;

CREATE TABLE tenants (
    -- Part of asset paths, so restricted to a safe path segment.
    tenant_id    text PRIMARY KEY CHECK (tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    job_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'done', 'failed')),
    current_step      text NOT NULL DEFAULT vp_first_stage('variant') REFERENCES pipeline_stages (name),
    -- How many variants the job fans out into; the rollup counts against this, not existing rows.
    expected_variants integer NOT NULL DEFAULT 3 CHECK (expected_variants BETWEEN 1 AND 16),
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);
CREATE INDEX jobs_tenant_idx ON jobs (tenant_id, created_at);
CREATE INDEX jobs_state_idx ON jobs (current_step, status);

CREATE TABLE jobs_variants (
    job_variants_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id                uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    creation_order        integer NOT NULL CHECK (creation_order >= 1),
    img_asset_id          uuid,
    overlaid_img_asset_id uuid,
    status                text NOT NULL DEFAULT 'queued'
                          CHECK (status IN ('queued', 'running', 'done', 'failed')),
    current_step          text NOT NULL DEFAULT vp_first_stage('variant') REFERENCES pipeline_stages (name),
    error                 text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    UNIQUE (job_id, creation_order),
    -- Target of the (job_variants_id, job_id) foreign keys below: a stage output row can never
    -- name a variant of another job (the original mixed up variants of
    -- different jobs this way).
    UNIQUE (job_variants_id, job_id)
);
CREATE INDEX jobs_variants_state_idx ON jobs_variants (current_step, status);

CREATE TABLE image_assets (
    image_asset_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id),
    job_id          uuid REFERENCES jobs (job_id) ON DELETE CASCADE,
    job_variants_id uuid REFERENCES jobs_variants (job_variants_id) ON DELETE CASCADE,
    image_type      text NOT NULL,
    -- Relative to the asset root (AssetStore), never absolute and never climbing out of it.
    path            text NOT NULL CHECK (path !~ '^/' AND path !~ '(^|/)\.\.(/|$)'),
    width           integer CHECK (width > 0),
    height          integer CHECK (height > 0),
    sha256          text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX image_assets_job_idx ON image_assets (job_id);
CREATE INDEX image_assets_variant_idx ON image_assets (job_variants_id);

ALTER TABLE jobs_variants
    ADD FOREIGN KEY (img_asset_id) REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    ADD FOREIGN KEY (overlaid_img_asset_id) REFERENCES image_assets (image_asset_id) ON DELETE SET NULL;

CREATE TABLE job_inputs (
    job_id                 uuid PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    desc_kor               text NOT NULL CHECK (btrim(desc_kor) <> ''),
    desc_eng               text,
    ad_copy_eng            text,
    ad_copy_kor            text,
    prompt                 text,
    product_image_asset_id uuid REFERENCES image_assets (image_asset_id)
);

-- Stage outputs --------------------------------------------------------------------------

-- yolo_detect: the boxes (replaced as a set) and one run summary per variant.
CREATE TABLE detection_runs (
    job_variants_id   uuid PRIMARY KEY,
    job_id            uuid NOT NULL,
    image_asset_id    uuid REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    model             text,
    forbidden_classes text[] NOT NULL DEFAULT '{}',
    detection_count   integer NOT NULL DEFAULT 0 CHECK (detection_count >= 0),
    mask_asset_id     uuid REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    latency_ms        integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (job_variants_id, job_id) REFERENCES jobs_variants (job_variants_id, job_id) ON DELETE CASCADE
);

CREATE TABLE detections (
    detection_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_variants_id uuid NOT NULL,
    job_id          uuid NOT NULL,
    image_asset_id  uuid REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    label           text NOT NULL,
    class_id        integer,
    score           double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
    -- Pixel coordinates in the variant image.
    x1              double precision NOT NULL,
    y1              double precision NOT NULL,
    x2              double precision NOT NULL,
    y2              double precision NOT NULL,
    forbidden       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (x2 >= x1 AND y2 >= y1),
    FOREIGN KEY (job_variants_id, job_id) REFERENCES jobs_variants (job_variants_id, job_id) ON DELETE CASCADE
);
CREATE INDEX detections_variant_idx ON detections (job_variants_id);

-- planner: image_asset_id is the variant's own image (the original keyed it by the job's
-- upload, so overlay never found the proposals).
CREATE TABLE planner_proposals (
    proposal_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_variants_id        uuid NOT NULL UNIQUE,
    job_id                 uuid NOT NULL,
    image_asset_id         uuid REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    layout                 jsonb NOT NULL,
    visualization_asset_id uuid REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    latency_ms             integer,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (job_variants_id, job_id) REFERENCES jobs_variants (job_variants_id, job_id) ON DELETE CASCADE
);

CREATE TABLE overlay_layouts (
    overlay_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_variants_id   uuid NOT NULL UNIQUE,
    job_id            uuid NOT NULL,
    proposal_id       uuid REFERENCES planner_proposals (proposal_id) ON DELETE SET NULL,
    -- The chosen text box, as fractions of the image size.
    x_ratio           double precision NOT NULL CHECK (x_ratio BETWEEN 0 AND 1),
    y_ratio           double precision NOT NULL CHECK (y_ratio BETWEEN 0 AND 1),
    width_ratio       double precision NOT NULL CHECK (width_ratio > 0 AND width_ratio <= 1),
    height_ratio      double precision NOT NULL CHECK (height_ratio > 0 AND height_ratio <= 1),
    -- Where the text was actually drawn (the evaluations measure this, not the box the
    -- planner proposed).
    text_x_ratio      double precision,
    text_y_ratio      double precision,
    text_width_ratio  double precision,
    text_height_ratio double precision,
    layout            jsonb NOT NULL,
    overlaid_asset_id uuid REFERENCES image_assets (image_asset_id) ON DELETE SET NULL,
    latency_ms        integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (job_variants_id, job_id) REFERENCES jobs_variants (job_variants_id, job_id) ON DELETE CASCADE
);

CREATE TABLE vlm_traces (
    vlm_trace_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL,
    job_variants_id uuid NOT NULL,
    operation_type  text NOT NULL CHECK (operation_type IN ('analyze', 'judge')),
    provider        text,
    model           text,
    request         jsonb NOT NULL DEFAULT '{}',
    response        jsonb NOT NULL DEFAULT '{}',
    latency_ms      integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_variants_id, operation_type),
    FOREIGN KEY (job_variants_id, job_id) REFERENCES jobs_variants (job_variants_id, job_id) ON DELETE CASCADE
);

CREATE TABLE evaluations (
    evaluation_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL,
    job_variants_id uuid NOT NULL,
    overlay_id      uuid REFERENCES overlay_layouts (overlay_id) ON DELETE SET NULL,
    evaluation_type text NOT NULL CHECK (evaluation_type IN ('ocr', 'readability', 'iou')),
    metrics         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_variants_id, evaluation_type),
    FOREIGN KEY (job_variants_id, job_id) REFERENCES jobs_variants (job_variants_id, job_id) ON DELETE CASCADE
);

-- Job-level outputs ------------------------------------------------------------------------

CREATE TABLE llm_traces (
    llm_trace_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id            uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    operation_type    text NOT NULL,
    provider          text,
    model             text,
    request           jsonb NOT NULL DEFAULT '{}',
    response          jsonb NOT NULL DEFAULT '{}',
    prompt_tokens     integer,
    completion_tokens integer,
    total_tokens      integer,
    latency_ms        integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, operation_type)
);

CREATE TABLE ad_copies (
    ad_copy_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id       uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    kind         text NOT NULL,
    text         text NOT NULL,
    llm_trace_id uuid REFERENCES llm_traces (llm_trace_id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, kind)
);

CREATE TABLE instagram_feeds (
    instagram_feed_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id              uuid NOT NULL UNIQUE REFERENCES jobs (job_id) ON DELETE CASCADE,
    llm_trace_id        uuid REFERENCES llm_traces (llm_trace_id) ON DELETE SET NULL,
    ad_copy_kor         text,
    ad_copy_eng         text,
    product_description text,
    instagram_ad_copy   text NOT NULL,
    hashtags            text[] NOT NULL DEFAULT '{}',
    model               text,
    temperature         double precision,
    max_tokens          integer,
    latency_ms          integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

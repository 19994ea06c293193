"""SQLAlchemy Core declarations of the tables in sql/, for queries from Python.

The SQL files are the source of truth (they create the tables, constraints and triggers); these
declarations mirror their columns so queries are typed (uuid columns come back as ``uuid.UUID``,
jsonb as Python values). tests/test_db_tables.py checks that they match the migrated database.
Re-running a stage replaces its row: use ``sqlalchemy.dialects.postgresql.insert(...)
.on_conflict_do_update(index_elements=[...])`` on the unique keys noted below.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = sa.MetaData()

_UUID = sa.Uuid(as_uuid=True)
_TS = sa.DateTime(timezone=True)


def _created() -> sa.Column:
    return sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now())


def _updated() -> sa.Column:
    return sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now())


pipeline_stages = sa.Table(
    "pipeline_stages", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
)

tenants = sa.Table(
    "tenants", metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text),
    _created(),
)

def _attempt_columns() -> list[sa.Column]:
    """The attempt in progress on a variant or job row (sql/003_attempts.sql)."""
    return [sa.Column("attempt", sa.Integer, nullable=False), sa.Column("run_id", sa.Text),
            sa.Column("retry_at", _TS)]


jobs = sa.Table(
    "jobs", metadata,
    sa.Column("job_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("current_step", sa.Text, sa.ForeignKey("pipeline_stages.name"), nullable=False),
    sa.Column("expected_variants", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    _created(),
    _updated(),
    sa.Column("started_at", _TS),
    sa.Column("finished_at", _TS),
    *_attempt_columns(),
)

jobs_variants = sa.Table(
    "jobs_variants", metadata,
    sa.Column("job_variants_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id"), nullable=False),
    sa.Column("creation_order", sa.Integer, nullable=False),  # UNIQUE (job_id, creation_order)
    sa.Column("img_asset_id", _UUID),
    sa.Column("overlaid_img_asset_id", _UUID),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("current_step", sa.Text, sa.ForeignKey("pipeline_stages.name"), nullable=False),
    sa.Column("error", sa.Text),
    _created(),
    _updated(),
    sa.Column("started_at", _TS),
    sa.Column("finished_at", _TS),
    *_attempt_columns(),
)

image_assets = sa.Table(
    "image_assets", metadata,
    sa.Column("image_asset_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id")),
    sa.Column("job_variants_id", _UUID, sa.ForeignKey("jobs_variants.job_variants_id")),
    sa.Column("image_type", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),  # relative to the AssetStore root
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("sha256", sa.Text),
    _created(),
)

job_inputs = sa.Table(
    "job_inputs", metadata,
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id"), primary_key=True),
    sa.Column("desc_kor", sa.Text, nullable=False),
    sa.Column("desc_eng", sa.Text),
    sa.Column("ad_copy_eng", sa.Text),
    sa.Column("ad_copy_kor", sa.Text),
    sa.Column("prompt", sa.Text),
    sa.Column("product_image_asset_id", _UUID, sa.ForeignKey("image_assets.image_asset_id")),
)

# One row per variant (primary key): upsert on job_variants_id.
detection_runs = sa.Table(
    "detection_runs", metadata,
    sa.Column("job_variants_id", _UUID, primary_key=True),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("image_asset_id", _UUID),
    sa.Column("model", sa.Text),
    sa.Column("forbidden_classes", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("detection_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("mask_asset_id", _UUID),
    sa.Column("latency_ms", sa.Integer),
    _created(),
    _updated(),
)

# Many rows per variant, replaced as a set (delete the variant's rows, insert the new ones).
detections = sa.Table(
    "detections", metadata,
    sa.Column("detection_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_variants_id", _UUID, nullable=False),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("image_asset_id", _UUID),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("class_id", sa.Integer),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("x1", sa.Float, nullable=False),  # pixels of the variant image
    sa.Column("y1", sa.Float, nullable=False),
    sa.Column("x2", sa.Float, nullable=False),
    sa.Column("y2", sa.Float, nullable=False),
    sa.Column("forbidden", sa.Boolean, nullable=False, server_default=sa.false()),
    _created(),
)

# UNIQUE (job_variants_id); image_asset_id is the variant's own image.
planner_proposals = sa.Table(
    "planner_proposals", metadata,
    sa.Column("proposal_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_variants_id", _UUID, nullable=False, unique=True),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("image_asset_id", _UUID),
    sa.Column("layout", JSONB, nullable=False),
    sa.Column("visualization_asset_id", _UUID),
    sa.Column("latency_ms", sa.Integer),
    _created(),
    _updated(),
)

# UNIQUE (job_variants_id).
overlay_layouts = sa.Table(
    "overlay_layouts", metadata,
    sa.Column("overlay_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_variants_id", _UUID, nullable=False, unique=True),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("proposal_id", _UUID),
    sa.Column("x_ratio", sa.Float, nullable=False),
    sa.Column("y_ratio", sa.Float, nullable=False),
    sa.Column("width_ratio", sa.Float, nullable=False),
    sa.Column("height_ratio", sa.Float, nullable=False),
    sa.Column("text_x_ratio", sa.Float),
    sa.Column("text_y_ratio", sa.Float),
    sa.Column("text_width_ratio", sa.Float),
    sa.Column("text_height_ratio", sa.Float),
    sa.Column("layout", JSONB, nullable=False),
    sa.Column("overlaid_asset_id", _UUID),
    sa.Column("latency_ms", sa.Integer),
    _created(),
    _updated(),
)

# UNIQUE (job_variants_id, operation_type); operation_type in ('analyze', 'judge').
vlm_traces = sa.Table(
    "vlm_traces", metadata,
    sa.Column("vlm_trace_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("job_variants_id", _UUID, nullable=False),
    sa.Column("operation_type", sa.Text, nullable=False),
    sa.Column("provider", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("request", JSONB, nullable=False, server_default="{}"),
    sa.Column("response", JSONB, nullable=False, server_default="{}"),
    sa.Column("latency_ms", sa.Integer),
    _created(),
    _updated(),
)

# UNIQUE (job_variants_id, evaluation_type); evaluation_type in ('ocr', 'readability', 'iou').
evaluations = sa.Table(
    "evaluations", metadata,
    sa.Column("evaluation_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("job_variants_id", _UUID, nullable=False),
    sa.Column("overlay_id", _UUID),
    sa.Column("evaluation_type", sa.Text, nullable=False),
    sa.Column("metrics", JSONB, nullable=False),
    _created(),
    _updated(),
)

# UNIQUE (job_id, operation_type).
llm_traces = sa.Table(
    "llm_traces", metadata,
    sa.Column("llm_trace_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id"), nullable=False),
    sa.Column("operation_type", sa.Text, nullable=False),
    sa.Column("provider", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("request", JSONB, nullable=False, server_default="{}"),
    sa.Column("response", JSONB, nullable=False, server_default="{}"),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("total_tokens", sa.Integer),
    sa.Column("latency_ms", sa.Integer),
    _created(),
    _updated(),
)

# UNIQUE (job_id, kind).
ad_copies = sa.Table(
    "ad_copies", metadata,
    sa.Column("ad_copy_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("llm_trace_id", _UUID),
    _created(),
    _updated(),
)

# UNIQUE (job_id).
instagram_feeds = sa.Table(
    "instagram_feeds", metadata,
    sa.Column("instagram_feed_id", _UUID, primary_key=True, server_default=sa.func.gen_random_uuid()),
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id"), nullable=False, unique=True),
    sa.Column("llm_trace_id", _UUID),
    sa.Column("ad_copy_kor", sa.Text),
    sa.Column("ad_copy_eng", sa.Text),
    sa.Column("product_description", sa.Text),
    sa.Column("instagram_ad_copy", sa.Text, nullable=False),
    sa.Column("hashtags", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("model", sa.Text),
    sa.Column("temperature", sa.Float),
    sa.Column("max_tokens", sa.Integer),
    sa.Column("latency_ms", sa.Integer),
    _created(),
    _updated(),
)

# The outbox; read it through variant_pipeline.outbox.read_events_after, not by id.
pipeline_events = sa.Table(
    "pipeline_events", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("xid", sa.Text, nullable=False),  # xid8; compare in SQL, not in Python
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("job_variants_id", _UUID),
    sa.Column("job_id", _UUID, nullable=False),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("old_step", sa.Text),
    sa.Column("old_status", sa.Text),
    sa.Column("new_step", sa.Text, nullable=False),
    sa.Column("new_status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("origin", sa.Text, nullable=False),
)

stage_attempts = sa.Table(
    "stage_attempts", metadata,
    sa.Column("attempt_id", sa.BigInteger, primary_key=True),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("job_id", _UUID, sa.ForeignKey("jobs.job_id"), nullable=False),
    sa.Column("job_variants_id", _UUID, sa.ForeignKey("jobs_variants.job_variants_id")),
    sa.Column("stage", sa.Text, sa.ForeignKey("pipeline_stages.name"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("worker", sa.Text),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("finished_at", _TS),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("will_retry", sa.Boolean),
)

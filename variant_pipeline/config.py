"""Configuration in one place: environment variables over defaults.

Every setting has an environment variable; nothing else in the project reads the
environment for configuration. The settings a model family declares (its model locations, whose
defaults are the tiny offline bundle that ``variant-pipeline models build-tiny`` writes under
``$VARIANT_PIPELINE_HOME/models/tiny``, and the ``VP_SERVE_*`` options) are resolved by the model
layer from ``Settings.environ``, so this module knows no model family.

Importing this module changes nothing; ``apply_offline_defaults()`` sets the model libraries'
offline switches, called by the entry points (the CLI, the Dagster code location, the loaders).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"

# COCO class names that the text must not cover by default. The original listed "hand" and
# "plate", which no COCO model has, so they silently never matched; names are now checked
# against the detector's own class names when it loads.
DEFAULT_FORBIDDEN_CLASSES: tuple[str, ...] = (
    "person", "pizza", "sandwich", "cake", "donut", "hot dog", "banana", "apple",
    "orange", "broccoli", "carrot", "bowl", "cup", "wine glass", "bottle",
)

# Live variant partitions the prune schedule keeps in Dagster. Dagster rebuilds an asset's partition
# status whenever a partition is added, so in a running deployment most page views pay for it: at
# 10,000 every page measured drew within 10 s on two cores, at 50,000 the lineage took 26 s
# (docs/capacity.md, scripts/bench_ui.py).
DEFAULT_PARTITION_BUDGET = 10_000


class SettingsError(ValueError):
    """An environment variable with a value this project cannot use; the message names it."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0/true/false), got {value!r}")


def _env_int(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {value!r}") from None


def _env_float(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None


def home_dir() -> Path:
    """Where runtime state lives: embedded database, Dagster home, asset files, tiny models."""
    return Path(_env("VARIANT_PIPELINE_HOME", str(PROJECT_ROOT / "var"))).resolve()


# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a
# letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class AssetRoot:
    """A parsed asset root: ``local`` (``directory``) or ``s3`` (``bucket`` and ``prefix``)."""

    kind: str
    directory: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @property
    def uri(self) -> str:
        if self.kind == "local":
            return str(self.directory)
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_asset_root(value: str) -> AssetRoot:
    """``/some/dir`` (relative: from the working directory) or ``s3://bucket[/prefix]``."""
    value = value.strip()
    if not value:
        raise SettingsError("the asset root is empty: give a directory or s3://bucket[/prefix]")
    if "://" not in value:
        return AssetRoot("local", directory=Path(value).expanduser().resolve())
    scheme, _, rest = value.partition("://")
    if scheme.lower() != "s3":
        raise SettingsError(f"asset root {value!r}: only a local directory or s3://bucket[/prefix] is supported")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise SettingsError(f"asset root {value!r}: {bucket!r} is not a valid bucket name "
                            "(3-63 lower-case letters, digits, '.' or '-')")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise SettingsError(f"asset root {value!r}: the prefix may not contain '.' or '..'")
    return AssetRoot("s3", bucket=bucket, prefix="/".join(parts))


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3 endpoint. ``None`` fields are left to the standard AWS_* variables."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)  # never in a log line
    region: str | None = None
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    # How long one request keeps retrying connection and server errors before it fails: short, so
    # a stage attempt fails (and is retried by the pipeline's own policy) instead of hanging.
    retry_timeout_s: float = 15.0


@dataclass(frozen=True)
class Settings:
    home: Path
    # None: use the embedded PostgreSQL under home/pgdata.
    database_url: str | None
    # A local directory or s3://bucket[/prefix] (data/storage.py); local paths are absolute.
    asset_root: str
    models_dir: Path
    # "local" (transformers causal LM) or "openai" (OpenAI-compatible chat completions over HTTP).
    text_backend: str
    openai_base_url: str | None
    openai_api_key: str | None
    openai_model: str
    openai_timeout_s: float
    device: str  # "auto", "cpu", "cuda", "cuda:1", ...
    dtype: str  # "auto", "float32", "float16", "bfloat16"
    allow_network: bool
    forbidden_classes: tuple[str, ...]
    detector_conf: float
    detector_iou: float
    image_width: int
    image_height: int
    diffusion_steps: int
    seed_base: int
    font_path: str | None  # a Hangul-capable TTF/OTF; None: search the system
    tesseract_cmd: str  # the tesseract binary
    gpu_pool_limit: int
    # How long an idle outbox-sensor tick waits on LISTEN for new events (0: plain polling).
    sensor_listen_s: float
    # Recovery: attempts per (partition, stage), the first retry's delay (doubling after that),
    # the default time limit of one stage, per-stage limits ("img_gen=600,ocr_eval=60"), how long
    # a partition may sit between stages with no run before it counts as stalled, and how often
    # the recovery sensor looks.
    max_attempts: int = 3
    retry_backoff_s: float = 10.0
    stage_timeout_s: float = 1800.0
    stage_timeouts: dict[str, float] = field(default_factory=dict)
    stall_after_s: float = 300.0
    recovery_interval_s: float = 15.0
    run_lease_grace_s: float = 60.0  # a STARTED run without its lease for this long is dead
    # A frozen worker (SIGSTOP, a paused VM) loses its partition lock and run lease after this
    # long without its heartbeat (state/locks.py); 0: never. The heartbeat beats every quarter of
    # it, so 30 s tolerates three missed beats and lets recovery begin within the 60 s aim.
    lease_timeout_s: float = 30.0
    vlm_load_in_8bit: bool = False  # VP_VLM_LOAD_IN_8BIT: bitsandbytes 8-bit VLM (CUDA only)
    faults: str = ""  # VP_FAULTS fault drills (variant_pipeline/faults.py); empty: none
    # Retention (variant_pipeline/state/retention.py): the daily prune schedule exists when
    # prune_older_than or partition_budget is set; orphan files younger than orphan_min_age_s are
    # never removed. partition_budget: live variant partitions kept in Dagster (0: no budget).
    prune_older_than: str = ""
    partition_budget: int = DEFAULT_PARTITION_BUDGET
    prune_rows: bool = False
    prune_cron: str = "0 3 * * *"
    orphan_min_age_s: float = 3600.0
    # Quality checks on each variant (severity WARN: a variant that fails one is still delivered).
    check_min_ocr_accuracy: float = 0.8  # OCR read-back accuracy at or above this
    check_wcag_level: str = "AA"  # the WCAG level the mean and worst-case contrast must meet
    check_max_text_iou: float = 0.05  # text box overlap with any forbidden object at or below this
    # Where the served model families run: "local" (in the run process) or "ray" (Ray Serve).
    model_backend: str = "local"
    ray_address: str | None = None  # RAY_ADDRESS; None: the local head `serve start` recorded
    # Failure notices (sensors/notices.py): where to post them (None: nowhere), the UI address
    # their run links use, and the least time between two posts.
    alert_webhook_url: str | None = None
    ui_url: str = "http://127.0.0.1:3000"
    alert_min_interval_s: float = 30.0
    s3: S3Options = field(default_factory=S3Options)  # used when asset_root is s3://...
    # The environment's VP_* variables as they were when these settings loaded. The settings a
    # model family declares in its registry row (VP_VLM_MODEL, VP_SERVE_BATCH, ...) are read from
    # here by the model layer (models/registry.py, models/serve_options.py): a new family needs no
    # field here.
    environ: dict[str, str] = field(default_factory=dict, repr=False)  # holds secrets too: never in a log line


def load_settings() -> Settings:
    home = home_dir()
    models_dir = Path(_env("VP_MODELS_DIR", str(home / "models" / "tiny"))).resolve()
    forbidden = _env("VP_FORBIDDEN_CLASSES")
    return Settings(
        home=home,
        database_url=_env("DATABASE_URL"),
        asset_root=_asset_root(home),
        models_dir=models_dir,
        text_backend=_env("VP_TEXT_BACKEND", "local"),
        openai_base_url=_env("VP_OPENAI_BASE_URL"),
        openai_api_key=_env("VP_OPENAI_API_KEY"),
        openai_model=_env("VP_OPENAI_MODEL", "gpt-4o-mini"),
        openai_timeout_s=_env_float("VP_OPENAI_TIMEOUT_S", 60.0),
        device=_env("VP_DEVICE", "auto"),
        dtype=_env("VP_DTYPE", "auto"),
        allow_network=_env_bool("VP_ALLOW_NETWORK", False),
        forbidden_classes=(
            tuple(c.strip() for c in forbidden.split(",") if c.strip())
            if forbidden else DEFAULT_FORBIDDEN_CLASSES
        ),
        detector_conf=_env_float("VP_DETECTOR_CONF", 0.25),
        detector_iou=_env_float("VP_DETECTOR_IOU", 0.45),
        image_width=_image_side("VP_IMAGE_WIDTH"),
        image_height=_image_side("VP_IMAGE_HEIGHT"),
        diffusion_steps=_env_int("VP_DIFFUSION_STEPS", 4),
        seed_base=_env_int("VP_SEED_BASE", 50),
        font_path=_env("VP_FONT_PATH"),
        tesseract_cmd=_env("VP_TESSERACT_CMD", "tesseract"),
        gpu_pool_limit=_env_int("VP_GPU_POOL_LIMIT", 1),
        sensor_listen_s=_env_float("VP_SENSOR_LISTEN_S", 4.0),
        max_attempts=_at_least("VP_MAX_ATTEMPTS", _env_int("VP_MAX_ATTEMPTS", 3), 1),
        retry_backoff_s=_seconds("VP_RETRY_BACKOFF_S", 10.0, allow_zero=True),
        stage_timeout_s=_seconds("VP_STAGE_TIMEOUT_S", 1800.0),
        stage_timeouts=_stage_timeouts(_env("VP_STAGE_TIMEOUTS")),
        stall_after_s=_seconds("VP_STALL_AFTER_S", 300.0),
        recovery_interval_s=_seconds("VP_RECOVERY_INTERVAL_S", 15.0),
        run_lease_grace_s=_seconds("VP_RUN_LEASE_GRACE_S", 60.0, allow_zero=True),
        lease_timeout_s=_seconds("VP_LEASE_TIMEOUT_S", 30.0, allow_zero=True),
        vlm_load_in_8bit=_env_bool("VP_VLM_LOAD_IN_8BIT", False),
        faults=_faults(_env("VP_FAULTS", "") or ""),
        prune_older_than=_prune_older_than(_env("VP_PRUNE_OLDER_THAN", "") or ""),
        prune_rows=_env_bool("VP_PRUNE_ROWS", False),
        partition_budget=_partition_budget(_env("VP_PARTITION_BUDGET")),
        prune_cron=_env("VP_PRUNE_CRON", "0 3 * * *") or "0 3 * * *",
        orphan_min_age_s=_seconds("VP_ORPHAN_MIN_AGE_S", 3600.0, allow_zero=True),
        check_min_ocr_accuracy=_fraction("VP_CHECK_MIN_OCR_ACCURACY", 0.8),
        check_wcag_level=_wcag_level(_env("VP_CHECK_WCAG_LEVEL", "AA") or "AA"),
        check_max_text_iou=_fraction("VP_CHECK_MAX_TEXT_IOU", 0.05),
        model_backend=_model_backend(_env("VP_MODEL_BACKEND", "local") or "local"),
        ray_address=_env("RAY_ADDRESS"),
        alert_webhook_url=_http_url("VP_ALERT_WEBHOOK_URL", _env("VP_ALERT_WEBHOOK_URL")),
        ui_url=_http_url("VP_UI_URL", _env("VP_UI_URL", "http://127.0.0.1:3000")) or "http://127.0.0.1:3000",
        alert_min_interval_s=_seconds("VP_ALERT_MIN_INTERVAL_S", 30.0, allow_zero=True),
        s3=S3Options(
            endpoint_url=_http_url("VP_S3_ENDPOINT_URL", _env("VP_S3_ENDPOINT_URL") or _env("AWS_ENDPOINT_URL")),
            access_key_id=_env("VP_S3_ACCESS_KEY_ID") or _env("AWS_ACCESS_KEY_ID"),
            secret_access_key=_env("VP_S3_SECRET_ACCESS_KEY") or _env("AWS_SECRET_ACCESS_KEY"),
            region=_env("VP_S3_REGION") or _env("AWS_REGION") or _env("AWS_DEFAULT_REGION"),
            request_timeout_s=_seconds("VP_S3_TIMEOUT_S", 30.0),
            retry_timeout_s=_seconds("VP_S3_RETRY_TIMEOUT_S", 15.0, allow_zero=True),
        ),
        environ={name: value for name, value in os.environ.items() if name.startswith("VP_") and value},
    )


def _asset_root(home: Path) -> str:
    """VP_ASSET_ROOT: a directory (default home/assets) or s3://bucket[/prefix], checked here."""
    if _env("VP_ASSETS_DIR") is not None:
        raise SettingsError("VP_ASSETS_DIR was renamed VP_ASSET_ROOT (a directory or s3://bucket/prefix)")
    try:
        return parse_asset_root(_env("VP_ASSET_ROOT", str(home / "assets")) or "").uri
    except SettingsError as exc:
        raise SettingsError(f"VP_ASSET_ROOT: {exc}") from None


def _http_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def _partition_budget(value: str | None) -> int:
    if value is None:
        return DEFAULT_PARTITION_BUDGET
    if not re.fullmatch(r"\d+", value.strip().replace("_", "")):
        raise SettingsError(f"VP_PARTITION_BUDGET must be a whole number of live variant partitions "
                            f"(0: no budget), got {value!r}")
    return int(value.strip().replace("_", ""))


def _prune_older_than(spec: str) -> str:
    from variant_pipeline.validation import InputError, parse_duration

    if spec:
        try:
            parse_duration(spec)
        except InputError as exc:
            raise SettingsError(f"VP_PRUNE_OLDER_THAN: {exc}") from None
    return spec


def _fraction(name: str, default: float) -> float:
    value = _env_float(name, default)
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} must be between 0 and 1, got {value!r}")
    return value


def _wcag_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("AA", "AAA"):
        raise SettingsError(f"VP_CHECK_WCAG_LEVEL must be AA or AAA, got {value!r}")
    return level


MODEL_BACKENDS = ("local", "ray")


def _model_backend(value: str) -> str:
    value = value.strip().lower()
    if value not in MODEL_BACKENDS:
        raise SettingsError(f"VP_MODEL_BACKEND must be one of {', '.join(MODEL_BACKENDS)}, got {value!r}")
    return value


def key_values(spec: str | None) -> list[tuple[str, str, str]]:
    """``"a=1, b=2"`` -> ``[("a=1", "a", "1"), ("b=2", "b", "2")]`` (item, key, value), blanks skipped."""
    out = []
    for item in (spec or "").split(","):
        if item.strip():
            key, _, value = item.partition("=")
            out.append((item.strip(), key.strip(), value))
    return out


def _seconds(name: str, default: float, *, allow_zero: bool = False) -> float:
    value = _env_float(name, default)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise SettingsError(f"{name} must be a finite number of seconds, {bound}; got {value!r}")
    return value


def _faults(spec: str) -> str:
    """Checked when the settings load, so a typo fails the process, not a stage half-claimed."""
    from variant_pipeline.faults import parse_faults

    try:
        parse_faults(spec)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return spec


def _image_side(name: str, default: int = 256) -> int:
    """Generated images go through the same size checks as photos, so their size must pass them."""
    from variant_pipeline.validation import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE

    value = _env_int(name, default)
    if not MIN_IMAGE_SIDE <= value <= MAX_IMAGE_SIDE:
        raise SettingsError(f"{name} must be between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE} pixels, got {value}")
    return value


def _at_least(name: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _stage_timeouts(spec: str | None) -> dict[str, float]:
    """``"img_gen=600,ocr_eval=60"`` -> per-stage time limits in seconds."""
    from variant_pipeline.stages import STAGES_BY_NAME

    limits: dict[str, float] = {}
    for item, name, value in key_values(spec):
        if name not in STAGES_BY_NAME:
            raise SettingsError(f"VP_STAGE_TIMEOUTS: unknown stage {name!r} in {spec!r}")
        try:
            limits[name] = float(value)
        except ValueError:
            raise SettingsError(f"VP_STAGE_TIMEOUTS: {item!r} is not STAGE=SECONDS") from None
        if not math.isfinite(limits[name]) or limits[name] <= 0:
            raise SettingsError(f"VP_STAGE_TIMEOUTS: the limit of {name} must be a finite number above 0")
    return limits


def apply_offline_defaults() -> None:
    """Set the model libraries' offline switches unless the user allowed the network."""
    if _env_bool("VP_ALLOW_NETWORK", False):
        return
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("YOLO_OFFLINE", "1"),
        # Ultralytics pip-installs missing extras on the fly (it patches PIL's Image.open to fetch
        # a HEIF plugin when a file is not a known image): never at run time.
        ("YOLO_AUTOINSTALL", "false"),
        ("YOLO_VERBOSE", "False"),
    ):
        os.environ.setdefault(name, value)
    # Ultralytics writes settings (and would fetch fonts) under its config dir: keep it ours.
    os.environ.setdefault("YOLO_CONFIG_DIR", str(home_dir() / "ultralytics"))
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

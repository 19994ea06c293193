"""Configuration in one place: environment variables over defaults.

Every setting has an environment variable; nothing else in the project reads the
environment for configuration. ``Settings`` is a pydantic-settings model: each field is read from
``VP_<FIELD>`` (or the alias it names), typed and checked by its validators, and a bad value fails
``load_settings()`` with one line that names the variable. The settings a model family declares
(its model locations, whose defaults are the tiny offline bundle that ``variant-pipeline models
build-tiny`` writes under ``$VARIANT_PIPELINE_HOME/models/tiny``, and the ``VP_SERVE_*`` options)
are resolved by the model layer from ``Settings.environ``, so this module knows no model family.

Importing this module changes nothing; ``apply_offline_defaults()`` sets the model libraries'
offline switches, called by the entry points (the CLI, the Dagster code location, the loaders).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"
DEFAULT_HOME = PROJECT_ROOT / "var"

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

MODEL_BACKENDS = ("local", "ray")


class SettingsError(ValueError):
    """An environment variable with a value this project cannot use; the message names it."""


def home_dir() -> Path:
    """Where runtime state lives: embedded database, Dagster home, asset files, tiny models."""
    return Path(os.environ.get("VARIANT_PIPELINE_HOME") or DEFAULT_HOME).resolve()


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


def key_values(spec: str | None) -> list[tuple[str, str, str]]:
    """``"a=1, b=2"`` -> ``[("a=1", "a", "1"), ("b=2", "b", "2")]`` (item, key, value), blanks skipped."""
    out = []
    for item in (spec or "").split(","):
        if item.strip():
            key, _, value = item.partition("=")
            out.append((item.strip(), key.strip(), value))
    return out


def _variable(model: type[BaseModel], key: str) -> str:
    """The environment variable a field is read from (``key``: the field's name, or the alias it was read by)."""
    field = model.model_fields.get(key)
    if field is None:
        return key
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{model.model_config.get('env_prefix', '')}{key.upper()}"


def _field_variable(model: type[BaseModel], info: ValidationInfo) -> str:
    return _variable(model, info.field_name or "")


# The checks below are ours, not pydantic's constraints: their messages name the variable and the
# unit, as operators have read them so far, where pydantic's name the field.
def _seconds(variable: str, value: float, *, allow_zero: bool) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise SettingsError(f"{variable} must be a finite number of seconds, {bound}; got {value!r}")
    return value


def _http_url(variable: str, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise SettingsError(f"{variable} must be an http:// or https:// URL, got {value!r}")
    return value


class S3Options(BaseModel):
    """How to reach an S3 endpoint. ``None`` fields are left to the standard AWS_* variables.

    ``load_settings()`` reads it from the environment by the variable names below (the first one
    set wins); code builds it by field name.
    """

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("VP_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"))
    access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("VP_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"))
    secret_access_key: str | None = Field(  # never in a log line
        None, repr=False, validation_alias=AliasChoices("VP_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"))
    region: str | None = Field(
        None, validation_alias=AliasChoices("VP_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    request_timeout_s: float = Field(30.0, validation_alias="VP_S3_TIMEOUT_S")
    connect_timeout_s: float = 5.0  # no variable of its own
    # How long one request keeps retrying connection and server errors before it fails: short, so
    # a stage attempt fails (and is retried by the pipeline's own policy) instead of hanging.
    retry_timeout_s: float = Field(15.0, validation_alias="VP_S3_RETRY_TIMEOUT_S")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _http_url(_field_variable(cls, info), value)

    @field_validator("request_timeout_s")
    @classmethod
    def _request_timeout(cls, value: float, info: ValidationInfo) -> float:
        return _seconds(_field_variable(cls, info), value, allow_zero=False)

    @field_validator("retry_timeout_s")
    @classmethod
    def _retry_timeout(cls, value: float, info: ValidationInfo) -> float:
        return _seconds(_field_variable(cls, info), value, allow_zero=True)


class _FromEnvironment(BaseSettings):
    """Fields read from ``VP_<FIELD>`` in the process environment only (no .env file, no secrets
    directory; names match case-insensitively, as pydantic-settings does); an empty variable counts
    as unset, values are never JSON (lists and maps are parsed by the fields' own validators), and
    defaults pass the same validators."""

    model_config = SettingsConfigDict(env_prefix="VP_", env_ignore_empty=True, enable_decoding=False,
                                      validate_default=True, frozen=True, extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


class Settings(_FromEnvironment):
    """Every setting, read by ``load_settings()``; change one with ``settings.model_copy(update=...)``."""

    home: Path = Field(DEFAULT_HOME, validation_alias="VARIANT_PIPELINE_HOME")
    # None: use the embedded PostgreSQL under home/pgdata.
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    # A local directory or s3://bucket[/prefix] (data/storage.py); local paths are absolute.
    asset_root: str = Field(default_factory=lambda data: str(data["home"] / "assets"))
    models_dir: Path = Field(default_factory=lambda data: data["home"] / "models" / "tiny")
    # "local" (transformers causal LM) or "openai" (OpenAI-compatible chat completions over HTTP).
    text_backend: str = "local"
    openai_base_url: str | None = None
    openai_api_key: str | None = Field(None, repr=False)  # never in a log line
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = 60.0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    dtype: str = "auto"  # "auto", "float32", "float16", "bfloat16"
    allow_network: bool = False
    forbidden_classes: tuple[str, ...] = DEFAULT_FORBIDDEN_CLASSES  # a comma list
    detector_conf: float = 0.25
    detector_iou: float = 0.45
    image_width: int = 256
    image_height: int = 256
    diffusion_steps: int = 4
    seed_base: int = 50
    font_path: str | None = None  # a Hangul-capable TTF/OTF; None: search the system
    tesseract_cmd: str = "tesseract"  # the tesseract binary
    gpu_pool_limit: int = 1
    # How long an idle outbox-sensor tick waits on LISTEN for new events (0: plain polling).
    sensor_listen_s: float = 4.0
    # Recovery: attempts per (partition, stage), the first retry's delay (doubling after that),
    # the default time limit of one stage, per-stage limits ("img_gen=600,ocr_eval=60"), how long
    # a partition may sit between stages with no run before it counts as stalled, and how often
    # the recovery sensor looks.
    max_attempts: int = 3
    retry_backoff_s: float = 10.0
    stage_timeout_s: float = 1800.0
    stage_timeouts: dict[str, float] = Field(default_factory=dict)
    stall_after_s: float = 300.0
    recovery_interval_s: float = 15.0
    run_lease_grace_s: float = 60.0  # a STARTED run without its lease for this long is dead
    # A frozen worker (SIGSTOP, a paused VM) loses its partition lock and run lease after this
    # long without its heartbeat (data/locks.py); 0: never. The heartbeat beats every quarter of
    # it, so 30 s tolerates three missed beats and lets recovery begin within the 60 s aim.
    lease_timeout_s: float = 30.0
    vlm_load_in_8bit: bool = False  # bitsandbytes 8-bit VLM (CUDA only)
    faults: str = ""  # fault drills (variant_pipeline/faults.py); empty: none
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
    # None: the local head `serve start` recorded.
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    # Failure notices (sensors/notices.py): where to post them (None: nowhere), the UI address
    # their run links use, and the least time between two posts.
    alert_webhook_url: str | None = None
    ui_url: str = "http://127.0.0.1:3000"
    alert_min_interval_s: float = 30.0
    # Used when asset_root is s3://...; load_settings() passes both of these, so a stray VP_S3 or
    # VP_ENVIRON variable is never read as either.
    s3: S3Options = Field(default_factory=S3Options)
    # The environment's VP_* variables as they were when these settings loaded. The settings a
    # model family declares in its registry row (VP_VLM_MODEL, VP_SERVE_BATCH, ...) are read from
    # here by the model layer (models/registry.py, models/serve_options.py): a new family needs no
    # field here.
    environ: dict[str, str] = Field(default_factory=dict, repr=False)  # holds secrets too: never in a log line

    @field_validator("home", "models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator("asset_root")
    @classmethod
    def _asset_root(cls, value: str) -> str:
        try:
            return parse_asset_root(value).uri
        except SettingsError as exc:
            raise SettingsError(f"VP_ASSET_ROOT: {exc}") from None

    @field_validator("forbidden_classes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return tuple(c.strip() for c in value.split(",") if c.strip()) if isinstance(value, str) else value

    @field_validator("image_width", "image_height")
    @classmethod
    def _image_side(cls, value: int, info: ValidationInfo) -> int:
        """Generated images go through the same size checks as photos, so their size must pass them."""
        from variant_pipeline.validation import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE

        if not MIN_IMAGE_SIDE <= value <= MAX_IMAGE_SIDE:
            raise SettingsError(f"{_field_variable(cls, info)} must be between {MIN_IMAGE_SIDE} and "
                                f"{MAX_IMAGE_SIDE} pixels, got {value}")
        return value

    @field_validator("max_attempts")
    @classmethod
    def _at_least_one(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise SettingsError(f"{_field_variable(cls, info)} must be at least 1, got {value}")
        return value

    @field_validator("stage_timeout_s", "stall_after_s", "recovery_interval_s")
    @classmethod
    def _more_than_zero_seconds(cls, value: float, info: ValidationInfo) -> float:
        return _seconds(_field_variable(cls, info), value, allow_zero=False)

    @field_validator("retry_backoff_s", "run_lease_grace_s", "lease_timeout_s", "orphan_min_age_s",
                     "alert_min_interval_s")
    @classmethod
    def _zero_or_more_seconds(cls, value: float, info: ValidationInfo) -> float:
        return _seconds(_field_variable(cls, info), value, allow_zero=True)

    @field_validator("stage_timeouts", mode="before")
    @classmethod
    def _stage_timeouts(cls, value: Any) -> Any:
        """``"img_gen=600,ocr_eval=60"`` -> per-stage time limits in seconds (a map pydantic has no
        text form for)."""
        from variant_pipeline.stages import STAGES_BY_NAME

        if not isinstance(value, str):
            return value
        limits: dict[str, float] = {}
        for item, name, seconds in key_values(value):
            if name not in STAGES_BY_NAME:
                raise SettingsError(f"VP_STAGE_TIMEOUTS: unknown stage {name!r} in {value!r}")
            try:
                limits[name] = float(seconds)
            except ValueError:
                raise SettingsError(f"VP_STAGE_TIMEOUTS: {item!r} is not STAGE=SECONDS") from None
            if not math.isfinite(limits[name]) or limits[name] <= 0:
                raise SettingsError(f"VP_STAGE_TIMEOUTS: the limit of {name} must be a finite number above 0")
        return limits

    @field_validator("faults")
    @classmethod
    def _faults(cls, value: str) -> str:
        """Checked when the settings load, so a typo fails the process, not a stage half-claimed."""
        from variant_pipeline.faults import parse_faults

        parse_faults(value)  # its messages name VP_FAULTS
        return value

    @field_validator("prune_older_than")
    @classmethod
    def _prune_older_than(cls, value: str) -> str:
        from variant_pipeline.validation import InputError, parse_duration

        try:
            if value:  # empty: no age rule
                parse_duration(value)
        except InputError as exc:
            raise SettingsError(f"VP_PRUNE_OLDER_THAN: {exc}") from None
        return value

    @field_validator("partition_budget", mode="before")
    @classmethod
    def _partition_budget(cls, value: Any) -> Any:
        """A count, never signed or fractional (pydantic's int takes "+3" and "3.0"), said with its unit."""
        if not isinstance(value, str):
            return value
        if not re.fullmatch(r"\d+", value.strip().replace("_", "")):
            raise SettingsError(f"VP_PARTITION_BUDGET must be a whole number of live variant partitions "
                                f"(0: no budget), got {value!r}")
        return int(value.strip().replace("_", ""))

    @field_validator("check_min_ocr_accuracy", "check_max_text_iou")
    @classmethod
    def _fraction(cls, value: float, info: ValidationInfo) -> float:
        if not 0.0 <= value <= 1.0:
            raise SettingsError(f"{_field_variable(cls, info)} must be between 0 and 1, got {value!r}")
        return value

    @field_validator("check_wcag_level")
    @classmethod
    def _wcag_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("AA", "AAA"):
            raise SettingsError(f"VP_CHECK_WCAG_LEVEL must be AA or AAA, got {value!r}")
        return level

    @field_validator("model_backend")
    @classmethod
    def _model_backend(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in MODEL_BACKENDS:
            raise SettingsError(f"VP_MODEL_BACKEND must be one of {', '.join(MODEL_BACKENDS)}, got {value!r}")
        return value

    @field_validator("alert_webhook_url", "ui_url")
    @classmethod
    def _http(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _http_url(_field_variable(cls, info), value)


def load_settings() -> Settings:
    """The settings the process environment gives now; a bad value raises ``SettingsError``."""
    if os.environ.get("VP_ASSETS_DIR"):  # no field: a renamed variable, refused by its new name
        raise SettingsError("VP_ASSETS_DIR was renamed VP_ASSET_ROOT (a directory or s3://bucket/prefix)")
    variables = {name: value for name, value in os.environ.items() if value}
    try:
        s3 = S3Options.model_validate(variables, by_name=False)  # by variable name only
    except ValidationError as exc:
        raise SettingsError(_first_problem(S3Options, exc)) from None
    environ = {name: value for name, value in variables.items() if name.startswith("VP_")}
    try:
        return Settings(s3=s3, environ=environ)
    except ValidationError as exc:
        raise SettingsError(_first_problem(Settings, exc)) from None


def with_values(settings: Settings, values: Mapping[str, str], *, source: str,
                environ: Mapping[str, str] | None = None) -> Settings:
    """``settings`` with some fields given as text by field name (``{"device": "cpu"}``), read and
    checked as their ``VP_`` variables are; ``source`` names where they came from in the one-line
    error. ``environ`` replaces the settings' ``VP_`` environment (the families' location settings)."""
    fields = Settings.model_fields
    for name in values:
        if name not in fields or name in ("s3", "environ"):
            raise SettingsError(f"{source} {name!r} is not a setting")
        # Paths, lists and maps stay with the environment: other defaults derive from some (home).
        if not isinstance(getattr(settings, name), str | bool | int | float | None):
            raise SettingsError(f"{source} {name!r} is not a plain value setting")
    def key(name: str) -> str:  # what Settings(...) takes: the alias where a field has one
        alias = fields[name].validation_alias
        return alias if isinstance(alias, str) else name

    # Every field passes through its validators again (they are idempotent).
    current = {key(name): getattr(settings, name) for name in fields}
    given = {key(name): text for name, text in values.items()}
    if environ is not None:
        current["environ"] = dict(environ)
    try:
        return Settings(**{**current, **given})
    except ValidationError as exc:
        raise SettingsError(f"{source}: {_first_problem(Settings, exc)}") from None


# How a value pydantic could not read as its field's type is said; our validators say the rest.
_UNREADABLE = {
    "int_parsing": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be a boolean (1/0/true/false)",
}


def _first_problem(model: type[BaseModel], exc: ValidationError) -> str:
    """One line for the first bad value: our validator's message, or the variable and what it must be
    (pydantic's own text is several lines, names the field, not the variable, and links its docs)."""
    error: ErrorDetails = exc.errors(include_url=False)[0]
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    variable = _variable(model, str(error["loc"][0])) if error["loc"] else model.__name__
    if error["type"] in _UNREADABLE:
        return f"{variable} {_UNREADABLE[error['type']]}, got {error['input']!r}"
    return f"{variable}: {error['msg']}"


class _NetworkSwitch(_FromEnvironment):
    """VP_ALLOW_NETWORK alone: the entry points read it before, and apart from, the other settings."""

    allow_network: bool = False


def apply_offline_defaults() -> None:
    """Set the model libraries' offline switches unless the user allowed the network."""
    try:
        allowed = _NetworkSwitch().allow_network
    except ValidationError as exc:
        raise SettingsError(_first_problem(_NetworkSwitch, exc)) from None
    if allowed:
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

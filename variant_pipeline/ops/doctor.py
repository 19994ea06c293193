"""``variant-pipeline doctor``: whether this deployment can work, one check per line.

Each check says ok, or what is wrong and what to do about it. Nothing here loads a model or
starts a service: model locations are resolved on disk (the tiny bundle, a local path, a hub id
in the local Hugging Face cache), the daemon is judged by the heartbeats it writes, and the Ray
cluster is only asked what it serves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from variant_pipeline.config import Settings

# A daemon that has not written a heartbeat for this long is not running (it writes every ~30 s).
HEARTBEAT_MAX_AGE_S = 120.0
DEFAULT_MIN_FREE_GB = 2.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what is wrong and what to do

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_checks(settings: Settings, min_free_gb: float = DEFAULT_MIN_FREE_GB) -> list[Check]:
    checks: list[Check] = [_database()]
    checks.extend(_dagster(settings))
    checks.extend(_models(settings))
    checks.append(_tesseract(settings))
    checks.append(_fonts())
    if settings.model_backend == "ray":
        checks.append(_ray(settings))
    checks.append(_disk(settings, min_free_gb))
    return checks


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a check that cannot run has failed, and says why in one line
        return Check(name, False, " ".join(str(exc).split())[:400] or type(exc).__name__)


# --- the database ---------------------------------------------------------------------------


def _database() -> Check:
    def check() -> Check:
        from variant_pipeline.data.engine import app_database_url, get_engine, redact
        from variant_pipeline.data.migrations import migration_status

        url = app_database_url()
        status = migration_status(get_engine(url))
        if status.changed:
            return Check("database", False, f"{redact(url)}: migrations changed after they were applied: "
                         f"{', '.join(status.changed)}; restore the files as they were")
        if status.pending:
            return Check("database", False, f"{redact(url)}: {len(status.pending)} migration(s) pending "
                         f"({status.pending[0].path.name}...); run `variant-pipeline db upgrade`")
        return Check("database", True, f"{redact(url)}, {len(status.applied)} migrations applied, none pending")

    return _guard("database", check)


# --- Dagster --------------------------------------------------------------------------------


def _dagster(settings: Settings) -> list[Check]:
    state: dict[str, object] = {}

    def storage() -> Check:
        from variant_pipeline.sensors.retention import open_instance

        instance = open_instance()
        state["instance"] = instance
        instance.get_runs_count()  # reads the run storage: reachable, schema in place
        return Check("dagster storage", True, f"instance at {os.environ.get('DAGSTER_HOME')}, runs readable")

    checks = [_guard("dagster storage", storage)]
    if "instance" not in state:
        checks.append(Check("dagster daemon", False, "not checked: Dagster's storage cannot be read"))
        return checks

    def daemon() -> Check:
        beats = state["instance"].get_daemon_heartbeats()  # type: ignore[attr-defined]
        if not beats:
            return Check("dagster daemon", False, "no heartbeat ever written: start `dagster-daemon run` "
                         "(or `variant-pipeline demo`)")
        age = time.time() - max(b.timestamp for b in beats.values())
        if age > HEARTBEAT_MAX_AGE_S:
            return Check("dagster daemon", False, f"last heartbeat {age:.0f} s ago: the daemon is not running; "
                         "start `dagster-daemon run`")
        return Check("dagster daemon", True, f"heartbeat {age:.0f} s ago ({', '.join(sorted(beats))})")

    def partitions() -> Check:
        from variant_pipeline.assets.partitions import variant_partitions

        live = len(state["instance"].get_dynamic_partitions(variant_partitions.name))  # type: ignore[attr-defined]
        budget = settings.partition_budget
        if not budget:
            return Check("dagster partitions", True, f"{live} live variant partitions (no partition budget)")
        if live > budget:
            return Check("dagster partitions", False, f"{live} live variant partitions, {live - budget} over the "
                         f"budget of {budget}: run `variant-pipeline prune` (the daily prune_schedule does), "
                         "or raise VP_PARTITION_BUDGET")
        return Check("dagster partitions", True, f"{live} live variant partitions, within the budget of {budget}")

    checks.append(_guard("dagster daemon", daemon))
    checks.append(_guard("dagster partitions", partitions))
    state["instance"].dispose()  # type: ignore[attr-defined]
    return checks


# --- models ---------------------------------------------------------------------------------


def _models(settings: Settings) -> list[Check]:
    from variant_pipeline.models.registry import model_location, tiny_defaults

    tiny = tiny_defaults(settings.models_dir)
    checks = []
    for field_name in tiny:
        if field_name == "text_model" and settings.text_backend == "openai":
            checks.append(Check("model text_model", True, f"OpenAI-compatible API at {settings.openai_base_url}, "
                                f"model {settings.openai_model} (not called by doctor)"))
            continue
        value = model_location(settings, field_name)
        checks.append(_guard(f"model {field_name}", lambda f=field_name, v=value: _model(f, v, tiny[f], settings)))
    return checks


def _model(field_name: str, value: str, tiny_path: str, settings: Settings) -> Check:
    name = f"model {field_name}"
    setting = f"VP_{field_name.upper()}"
    path = Path(value).expanduser()
    if value == tiny_path:
        if not path.exists():
            return Check(name, False, f"tiny bundle missing at {value}; `variant-pipeline models build-tiny "
                         f"{settings.models_dir}` builds it (the demo does too)")
        return Check(name, True, f"the tiny random-weight bundle ({_size(path)}): output is noise; set {setting} "
                     "to real weights")
    if path.exists():
        return Check(name, True, f"local path {path} ({_size(path)})")
    if _HUB_ID.match(value):
        cached = _hub_cache_dir(value)
        if cached is not None:
            return Check(name, True, f"hub id {value}, in the local cache {cached} ({_size(cached / 'blobs')})")
        if settings.allow_network:
            return Check(name, True, f"hub id {value}, not cached: downloads on first load (VP_ALLOW_NETWORK is on)")
        return Check(name, False, f"hub id {value} is not in the local Hugging Face cache and the network is off: "
                     f"download it once (`huggingface-cli download {value}`) or set VP_ALLOW_NETWORK=1")
    if value.endswith(".pt") and "/" not in value:
        if settings.allow_network:
            return Check(name, True, f"ultralytics weights {value}: downloaded on first load (VP_ALLOW_NETWORK is on)")
        return Check(name, False, f"ultralytics weights {value} not found locally and the network is off: "
                     f"give {setting} a path to the .pt file")
    return Check(name, False, f"{value} is neither a file nor a folder here, nor a hub id: fix {setting}")


def _hub_cache_dir(repo_id: str) -> Path | None:
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    return folder if (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir()) else None


def _size(path: Path) -> str:
    total = path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for unit in ("B", "KiB", "MiB", "GiB"):
        if total < 1024 or unit == "GiB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GiB"


# --- system tools ---------------------------------------------------------------------------


def _tesseract(settings: Settings) -> Check:
    def check() -> Check:
        binary = shutil.which(settings.tesseract_cmd)
        if binary is None:
            return Check("tesseract", False, f"{settings.tesseract_cmd!r} not found: install tesseract-ocr and "
                         "tesseract-ocr-kor (scripts/setup.sh does), or set VP_TESSERACT_CMD")
        listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=30)
        langs = {line.strip() for line in (listed.stdout + listed.stderr).splitlines()[1:]}
        missing = [lang for lang in ("kor", "eng") if lang not in langs]
        if missing:
            return Check("tesseract", False, f"{binary} lacks language data {', '.join(missing)}: install "
                         f"{' '.join('tesseract-ocr-' + m for m in missing)} (or fix TESSDATA_PREFIX)")
        return Check("tesseract", True, f"{binary} with Korean and English data")

    return _guard("tesseract", check)


def _fonts() -> Check:
    def check() -> Check:
        from variant_pipeline.work.fonts import FontCoverageError, resolve_font_chain

        try:
            chain = resolve_font_chain("한글 광고 문구 123 ☕")
        except FontCoverageError as exc:
            return Check("fonts", False, str(exc))
        fonts = [chain.primary.path, *(f.path for f in chain.fallbacks)]
        return Check("fonts", True, f"Hangul from {fonts[0]}" + (f", emoji from {fonts[-1]}" if len(fonts) > 1 else ""))

    return _guard("fonts", check)


# --- Ray ------------------------------------------------------------------------------------


def _ray(settings: Settings) -> Check:
    def check() -> Check:
        from variant_pipeline.models import ray_head
        from variant_pipeline.models.registry import FAMILIES, served_by_ray
        from variant_pipeline.models.serving import app_name

        try:
            address = ray_head.connect(settings)
        except ray_head.ModelServerUnavailable as exc:
            return Check("ray", False, f"{exc}; `variant-pipeline serve start` starts one")
        from ray import serve

        apps = serve.status().applications
        wanted = [app_name(f.name) for f in FAMILIES if served_by_ray(f, settings)]
        missing = [a for a in wanted if a not in apps]
        unhealthy = [f"{a} {apps[a].status.value}" for a in wanted if a in apps and apps[a].status.value != "RUNNING"]
        if missing or unhealthy:
            return Check("ray", False, f"cluster {address}: " + "; ".join(
                ([f"not deployed: {', '.join(missing)}"] if missing else []) + unhealthy)
                + "; `variant-pipeline serve start` deploys them")
        return Check("ray", True, f"cluster {address}, {len(wanted)} model families running")

    return _guard("ray", check)


# --- disk -----------------------------------------------------------------------------------


def _disk(settings: Settings, min_free_gb: float) -> Check:
    def check() -> Check:
        from variant_pipeline.data.storage import AssetStore

        store = AssetStore.from_settings(settings)
        if not store.is_local:  # an object store: reachable, allowed and there is what counts
            store.check()
            return Check("disk", True, f"asset store {store.uri} answers (a listing of tenants/ works)")
        where = Path(store.uri)
        while not where.exists() and where != where.parent:
            where = where.parent
        free_gb = shutil.disk_usage(where).free / 2**30
        if free_gb < min_free_gb:
            return Check("disk", False, f"{free_gb:.1f} GiB free under {store.uri} (want at least "
                         f"{min_free_gb:g}): free some, or prune old jobs (`variant-pipeline prune --older-than 30d`)")
        return Check("disk", True, f"{free_gb:.1f} GiB free under {store.uri}")

    return _guard("disk", check)

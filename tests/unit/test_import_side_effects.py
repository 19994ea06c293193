"""Importing the package changes nothing in the process; the entry points set the offline switches,
and a model loader sets them before any model library is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from variant_pipeline.config import PROJECT_ROOT

# Each in a fresh interpreter: this test process has imported (and prepared) plenty already.
IMPORT_EVERYTHING = """
import importlib, json, os, pkgutil
before = dict(os.environ)
import variant_pipeline
names = [m.name for m in pkgutil.walk_packages(variant_pipeline.__path__, "variant_pipeline.")]
for name in names:
    if name != "variant_pipeline.definitions":  # the code location: an entry point
        importlib.import_module(name)
after = dict(os.environ)
print(json.dumps({"modules": len(names),
                  "changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))}))
"""

# Records each model library's offline switch at the moment it is first imported, then loads the
# tiny VLM through its registry row, as a run does.
LOAD_THROUGH_THE_REGISTRY = """
import importlib.abc, json, os, sys
seen = {}

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("transformers", "huggingface_hub", "diffusers", "ultralytics") and name not in seen:
            seen[name] = os.environ.get("HF_HUB_OFFLINE")
        return None

sys.meta_path.insert(0, Watch())
from variant_pipeline.config import load_settings
from variant_pipeline.models import registry
registry.family("vlm").load(load_settings())
print(json.dumps(seen))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    switches = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                "DISABLE_TELEMETRY", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_VERBOSE", "YOLO_CONFIG_DIR",
                "DAGSTER_DISABLE_TELEMETRY", "VP_ALLOW_NETWORK")
    env = {k: v for k, v in os.environ.items() if k not in switches}
    return {**env, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def _run(code: str, env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_and_every_module_leaves_the_environment_alone() -> None:
    report = _run(IMPORT_EVERYTHING, _clean_env())
    assert report["modules"] > 50  # the walk found the package's modules
    assert report["changed"] == []


def test_a_loader_sets_the_offline_switches_before_a_model_library_is_imported(tiny_models) -> None:
    seen = _run(LOAD_THROUGH_THE_REGISTRY, _clean_env(VP_MODELS_DIR=str(tiny_models["root"])))
    assert "transformers" in seen and "huggingface_hub" in seen
    assert set(seen.values()) == {"1"}, seen


def test_the_cli_sets_the_switches_for_what_it_starts() -> None:
    code = ("import contextlib, io, json, os\n"
            "from variant_pipeline.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(json.dumps({k: os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'DAGSTER_DISABLE_TELEMETRY')}))")
    assert _run(code, _clean_env()) == {"HF_HUB_OFFLINE": "1", "DAGSTER_DISABLE_TELEMETRY": "1"}

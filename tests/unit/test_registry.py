"""The model registry: every stage's model is registered, and resources, asset kinds, the gpu pool
and the tiny bundle's layout all follow from its rows (a family added here shows up everywhere)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.stage_assets import GPU_POOL, build_stage_asset
from variant_pipeline.config import SettingsError, load_settings
from variant_pipeline.models import registry
from variant_pipeline.resources import ModelResource, default_resources
from variant_pipeline.resources.models import _with_overrides


def test_every_stage_model_names_a_registered_family() -> None:
    names = registry.family_names()
    assert len(set(names)) == len(names)
    for stage in stage_graph.STAGES:
        if stage.model is not None:
            assert registry.family(stage.model).name == stage.model, stage.name
    assert registry.family(stage_graph.BRIEF_MODEL).name == stage_graph.BRIEF_MODEL


def test_stages_using_follows_the_stage_graph() -> None:
    assert registry.stages_using("vlm") == ("vlm_analyze", "vlm_judge")
    assert registry.stages_using("text_model") == ("ad_copy_gen_kor", "instagram_feed_gen")
    used = {s for fam in registry.FAMILIES for s in registry.stages_using(fam.name)}
    assert used == {s.name for s in stage_graph.STAGES if s.model is not None}


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'llm'; known families: vlm, detector"):
        registry.family("llm")
    with pytest.raises(ValueError, match="unknown model family"):
        registry.stages_using("llm")


def test_asset_kinds_and_pool_derive_from_the_registry() -> None:
    from variant_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    for stage in stage_graph.STAGES:
        node = graph.get(dg.AssetKey(stage.name))
        fam = registry.family(stage.model) if stage.model else None
        expected_kinds = set(fam.kinds) if fam else set(registry.NO_MODEL_KINDS)
        assert {k.removeprefix("dagster/kind/") for k in node.tags if k.startswith("dagster/kind/")} == expected_kinds
        assert (node.pools == {GPU_POOL}) == bool(fam and fam.accelerator), stage.name


def test_default_resources_hold_one_model_resource_per_family() -> None:
    resources = default_resources()
    for fam in registry.FAMILIES:
        assert isinstance(resources[fam.name], ModelResource)
        assert resources[fam.name].family == fam.name


def test_registry_imports_no_model_library() -> None:
    # The daemon and the CLI read the registry; it must not pull in torch and friends.
    code = ("import sys, variant_pipeline.models.registry as r, variant_pipeline.config as c; "
            "c.load_settings(); [r.family(n).location(c.load_settings()) for n in r.family_names()]; "
            "heavy = {'torch', 'transformers', 'diffusers', 'ultralytics'} & set(sys.modules); "
            "print(sorted(heavy)); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_settings_defaults_are_the_tiny_layout(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VP_MODELS_DIR", str(tmp_path))
    for fam in registry.FAMILIES:
        for tiny in fam.tiny:
            monkeypatch.delenv(f"VP_{tiny.setting.upper()}", raising=False)
    settings = load_settings()
    for fam in registry.FAMILIES:
        for tiny in fam.tiny:
            assert registry.model_location(settings, tiny.setting) == str(tmp_path / tiny.path)


def test_resource_overrides_replace_settings_by_name() -> None:
    base = load_settings()
    s = _with_overrides(base, {"device": "cpu", "vlm_model": "/m", "vlm_load_in_8bit": "true",
                               "detector_conf": "0.5"})
    assert (s.device, registry.model_location(s, "vlm_model"), s.vlm_load_in_8bit, s.detector_conf) == (
        "cpu", "/m", True, 0.5)
    assert ModelResource(family="vlm", overrides={"vlm_model": "/m"}).location() == "/m"
    with pytest.raises(SettingsError, match="'no_such' is not a setting"):
        _with_overrides(base, {"no_such": "1"})
    with pytest.raises(SettingsError, match="model resource override: VP_VLM_LOAD_IN_8BIT must be a boolean"):
        _with_overrides(base, {"vlm_load_in_8bit": "maybe"})
    # An override passes the same checks as its variable (the range, not only the type).
    with pytest.raises(SettingsError, match="model resource override: VP_STAGE_TIMEOUT_S must be a finite number of seconds, more than 0"):
        _with_overrides(base, {"stage_timeout_s": "-1"})
    assert _with_overrides(base, {"stage_timeout_s": "90"}).stage_timeout_s == 90.0
    with pytest.raises(SettingsError, match="'home' is not a plain value setting"):
        _with_overrides(base, {"home": "/elsewhere"})  # models_dir and asset_root derive from it
    assert _with_overrides(base, {}) is base


def _toy_load(settings) -> dict[str, str]:
    return {"toy": settings.device}


def test_a_family_added_to_the_registry_shows_up_everywhere(monkeypatch, tmp_path: Path) -> None:
    toy = registry.ModelFamily(
        name="toy", description="A test family.", location=lambda s: f"toy@{s.device}", load=_toy_load,
        tiny=(registry.TinyModel("extra", "toy/model.txt",
                                 lambda path: (path.parent.mkdir(parents=True), path.write_text("toy"), path)[2]),),
        kinds=frozenset({"toykind"}), accelerator=True,
        served=registry.Serving(methods={"echo": registry.BatchedMethod(items=("texts",))}),
    )
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, toy))

    resources = default_resources()
    assert resources["toy"].get() == {"toy": load_settings().device}
    assert resources["toy"].location() == f"toy@{load_settings().device}"

    toy_stage = stage_graph.Stage("toy_stage", "job", "toy", "Uses the toy model.")
    monkeypatch.setattr(stage_graph, "STAGES", (*stage_graph.STAGES, toy_stage))
    monkeypatch.setattr(stage_graph, "STAGE_NAMES", (*stage_graph.STAGE_NAMES, toy_stage.name))
    assert registry.stages_using("toy") == ("toy_stage",)
    asset = build_stage_asset(toy_stage)
    assert next(iter(asset.specs)).kinds == {"toykind"}
    assert asset.op.pool == GPU_POOL
    assert "toy" in asset.required_resource_keys

    assert toy.build_tiny is not None
    assert toy.build_tiny(tmp_path) == {"extra": tmp_path / "toy" / "model.txt"}
    assert registry.tiny_defaults(tmp_path)["extra"] == str(tmp_path / "toy" / "model.txt")


def test_a_family_without_tiny_models_builds_nothing() -> None:
    ocr = registry.family("ocr")
    assert ocr.build_tiny is None and not ocr.served and not ocr.accelerator
    assert dataclasses.replace(ocr, tiny=()).build_tiny is None

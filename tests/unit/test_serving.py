"""The Ray Serve layer without a cluster: how calls combine into one model call, the settings,
and a cluster that is down."""

from __future__ import annotations

import pytest
from PIL import Image

from variant_pipeline.config import SettingsError, load_settings


def test_calls_combine_per_item_and_split_back_in_order() -> None:
    from variant_pipeline.models.serving import METHODS, ModelCall, _group_key, combine, split

    spec = METHODS["vlm"]["generate"]
    ims = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(3)]
    a = ModelCall("generate", {"images": ims[:2], "prompts": ["p", "q"], "do_sample": True, "seed": 7})
    b = ModelCall("generate", {"images": ims[2:], "prompts": ["r"], "do_sample": True, "seed": [9]})
    greedy = ModelCall("generate", {"images": ims[:1], "prompts": ["p"], "do_sample": False, "seed": None})
    assert _group_key(a, spec) == _group_key(b, spec)
    assert _group_key(a, spec) != _group_key(greedy, spec)  # a greedy call never shares a sampled one's
    kwargs = combine([a, b], spec)
    assert kwargs["prompts"] == ["p", "q", "r"] and kwargs["images"] == ims
    assert kwargs["seed"] == [7, 7, 9]  # one call's seed for each of its items, the other's own
    assert split(["A", "B", "C"], [a, b], spec) == [["A", "B"], ["C"]]
    with pytest.raises(RuntimeError, match="returned 2 results for 3 items"):
        split(["A", "B"], [a, b], spec)

    inpaint = METHODS["image_generator"]["inpaint"]
    small = ModelCall("inpaint", {"images": [Image.new("RGB", (8, 8))], "masks": [], "prompts": [], "seeds": [],
                                  "negative": None, "steps": 2})
    large = ModelCall("inpaint", {**small.kwargs, "images": [Image.new("RGB", (16, 16))]})
    assert _group_key(small, inpaint) != _group_key(large, inpaint)  # one size per pipeline call


def test_serve_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_SERVE_BATCH", "vlm=4:0.1,ocr=2")
    with pytest.raises(SettingsError, match="unknown model family 'ocr'"):
        load_settings()
    monkeypatch.setenv("VP_SERVE_BATCH", "vlm=4:0.1")
    monkeypatch.setenv("VP_MODEL_BACKEND", "gpu")
    with pytest.raises(SettingsError, match="VP_MODEL_BACKEND must be one of local, ray"):
        load_settings()
    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("VP_SERVE_REPLICAS", "vlm=0")
    with pytest.raises(SettingsError, match="VP_SERVE_REPLICAS: 'vlm=0': a family needs at least 1 replica"):
        load_settings()
    monkeypatch.delenv("VP_SERVE_REPLICAS")
    settings = load_settings()
    assert settings.serve_batch["vlm"] == (4, 0.1)
    assert settings.serve_batch["detector"] == (16, 0.02)  # the default


def test_a_cluster_that_is_down_is_one_clear_error_naming_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from variant_pipeline.models.ray_head import ModelServerUnavailable
    from variant_pipeline.models.serve_client import served

    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")  # nothing listens there
    vlm = served("vlm", load_settings())
    with pytest.raises(ModelServerUnavailable, match=r"^Ray cluster at 127\.0\.0\.1:6399 is not reachable"):
        vlm.generate([Image.new("RGB", (32, 32))], ["describe"])

"""The Ray Serve layer without a cluster: how calls combine into one model call, the settings,
and a cluster that is down."""

from __future__ import annotations

import pytest
from PIL import Image

from variant_pipeline.config import SettingsError, load_settings


def test_calls_combine_per_item_and_split_back_in_order() -> None:
    from variant_pipeline.models.registry import family
    from variant_pipeline.models.serving import ModelCall, _group_key, combine, split

    spec = family("vlm").served.methods["generate"]
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

    inpaint = family("image_generator").served.methods["inpaint"]
    small = ModelCall("inpaint", {"images": [Image.new("RGB", (8, 8))], "masks": [], "prompts": [], "seeds": [],
                                  "negative": None, "steps": 2})
    large = ModelCall("inpaint", {**small.kwargs, "images": [Image.new("RGB", (16, 16))]})
    assert _group_key(small, inpaint) != _group_key(large, inpaint)  # one size per pipeline call


def test_serve_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # The VP_SERVE_* options belong to the served families: the model layer reads them from the
    # settings, and every code location checks them when it builds its model resources.
    from variant_pipeline.models.serve_options import serve_options
    from variant_pipeline.resources import model_resources

    monkeypatch.setenv("VP_SERVE_BATCH", "vlm=4:0.1,ocr=2")
    with pytest.raises(SettingsError, match="unknown model family 'ocr'"):
        serve_options(load_settings())
    with pytest.raises(SettingsError, match="unknown model family 'ocr'"):
        model_resources()
    monkeypatch.setenv("VP_SERVE_BATCH", "vlm=4:0.1")
    monkeypatch.setenv("VP_MODEL_BACKEND", "gpu")
    with pytest.raises(SettingsError, match="VP_MODEL_BACKEND must be one of local, ray"):
        load_settings()
    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("VP_SERVE_REPLICAS", "vlm=0")
    with pytest.raises(SettingsError, match="VP_SERVE_REPLICAS: 'vlm=0': a family needs at least 1 replica"):
        serve_options(load_settings())
    monkeypatch.delenv("VP_SERVE_REPLICAS")
    options = serve_options(load_settings())
    assert (options["vlm"].max_batch_size, options["vlm"].batch_wait_s) == (4, 0.1)
    assert (options["detector"].max_batch_size, options["detector"].batch_wait_s) == (16, 0.02)  # the default


def test_a_cluster_that_is_down_is_one_clear_error_naming_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from variant_pipeline.models.ray_head import ModelServerUnavailable
    from variant_pipeline.models.serve_client import served

    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")  # nothing listens there
    vlm = served("vlm", load_settings())
    with pytest.raises(ModelServerUnavailable, match=r"^Ray cluster at 127\.0\.0\.1:6399 is not reachable"):
        vlm.generate([Image.new("RGB", (32, 32))], ["describe"])

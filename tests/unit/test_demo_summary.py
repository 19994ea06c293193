"""The demo's summary says when what it shows is the tiny random-weight models' noise."""

from __future__ import annotations

from variant_pipeline.config import load_settings
from variant_pipeline.demo import tiny_models_note


def test_the_tiny_bundle_is_named_as_noise_with_the_settings_to_change(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VP_MODELS_DIR", str(tmp_path / "tiny"))
    for name in ("VP_VLM_MODEL", "VP_DETECTOR_MODEL", "VP_TEXT2IMG_MODEL", "VP_INPAINT_MODEL", "VP_TEXT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    note = tiny_models_note(load_settings())
    assert note is not None and note.startswith("the copy and hashtags are noise: VP_VLM_MODEL")
    assert note.endswith("VP_TEXT_MODEL still point at the tiny random-weight bundle; set them to real weights "
                         "(a local path or a hub id, README: Configuration)")

    monkeypatch.setenv("VP_TEXT_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    note = tiny_models_note(load_settings())
    assert note is not None and note.startswith("the images and verdicts are noise") and "VP_TEXT_MODEL" not in note

    for name, value in (("VP_VLM_MODEL", "llava-hf/llava-1.5-7b-hf"), ("VP_DETECTOR_MODEL", "/models/yolov8x.pt"),
                        ("VP_TEXT2IMG_MODEL", "/models/sd"), ("VP_INPAINT_MODEL", "/models/sd-inpaint")):
        monkeypatch.setenv(name, value)
    assert tiny_models_note(load_settings()) is None

"""The model layer on the tiny bundle: production loading calls, cache, device/dtype, clear errors."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from variant_pipeline.config import load_settings
from variant_pipeline.models.cache import ModelCache, ModelNotFoundError, resolve_yolo_source
from variant_pipeline.models.causal_lm import CausalLM, load_causal_lm
from variant_pipeline.models.detector import Detector
from variant_pipeline.models.device import DeviceConfigError, resolve_device, resolve_dtype
from variant_pipeline.models.image_gen import ImageGenerator
from variant_pipeline.models.registry import model_location
from variant_pipeline.models.vlm import VlmBackend


def _noise(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_bundle_layout_matches_settings_defaults(tiny_models, monkeypatch):
    monkeypatch.setenv("VP_MODELS_DIR", str(tiny_models["root"]))
    for name in ("VP_VLM_MODEL", "VP_DETECTOR_MODEL", "VP_TEXT2IMG_MODEL", "VP_INPAINT_MODEL", "VP_TEXT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert Path(model_location(s, "vlm_model")) == tiny_models["vlm_model"]
    assert Path(model_location(s, "detector_model")) == tiny_models["detector_model"]
    assert Path(model_location(s, "text2img_model")) == tiny_models["text2img_model"]
    assert Path(model_location(s, "inpaint_model")) == tiny_models["inpaint_model"]
    assert Path(model_location(s, "text_model")) == tiny_models["text_model"]
    assert (tiny_models["root"] / "bundle.json").is_file()


def test_bundle_is_deterministic(tiny_models, tmp_path):
    from safetensors.torch import load_file

    from variant_pipeline.models.tiny import build_tiny_llava

    again = build_tiny_llava(tmp_path / "llava")
    a = load_file(tiny_models["vlm_model"] / "model.safetensors")
    b = load_file(again / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_llava_round_trip_through_auto_classes(tiny_models):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    vlm = VlmBackend.load(str(tiny_models["vlm_model"]), "cpu", "float32", cache=ModelCache())
    assert isinstance(vlm.model, LlavaForConditionalGeneration)
    # The processor expands <image> into exactly the number of patches the vision tower yields.
    processor = AutoProcessor.from_pretrained(tiny_models["vlm_model"])
    enc = processor(images=[_noise(0)], text=[vlm.format_prompt("Describe.")], return_tensors="pt")
    image_token = vlm.model.config.image_token_index
    assert int((enc["input_ids"] == image_token).sum()) == 16  # (32 / 8) ** 2
    images, prompts = [_noise(1), _noise(2)], ["Describe the product.", "Is it spicy?"]
    first = vlm.generate(images, prompts, max_new_tokens=6, min_new_tokens=6)
    assert len(first) == 2 and all(isinstance(t, str) and t for t in first)
    assert vlm.generate(images, prompts, max_new_tokens=6, min_new_tokens=6) == first  # greedy
    assert "ASSISTANT" not in first[0]  # only the new tokens come back


def test_vlm_sampling_seed_reproducible_per_item(tiny_models):
    vlm = VlmBackend.load(str(tiny_models["vlm_model"]), "cpu", "float32")
    img = _noise(3)
    kw = dict(do_sample=True, temperature=1.0, max_new_tokens=12, min_new_tokens=12)
    alone = vlm.generate([img], ["Pick a font."], seed=[7], **kw)
    batch = vlm.generate([_noise(4), img], ["Other prompt, longer than the first one.", "Pick a font."],
                         seed=[8, 7], **kw)
    assert batch[1] == alone[0]  # the item's answer depends on its own seed, not its neighbours
    assert vlm.generate([img], ["Pick a font."], seed=[9], **kw) != alone


def test_detector_round_trip_and_class_names(tiny_models):
    det = Detector.load(str(tiny_models["detector_model"]), "cpu")
    names = det.class_names
    assert len(names) == 80 and names[0] == "person" and "bowl" in names.values()
    assert type(det.model.model).__name__ == "DetectionModel"
    img = _noise(5, (160, 120))
    # Random weights: confidences ~1e-4, so the default threshold finds nothing; a low one does.
    assert det.predict([img], conf=0.25) == [[]]
    raw = det.predict([img, _noise(6, (64, 64))], conf=1e-6, max_det=20)
    assert len(raw) == 2 and 0 < len(raw[0]) <= 20
    for r in raw[0]:
        x1, y1, x2, y2 = r.box_px
        assert -1 <= x1 <= x2 <= 161 and -1 <= y1 <= y2 <= 121
        assert r.label == names[r.class_id]


def test_diffusers_round_trip(tiny_models):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    gen = ImageGenerator.create(str(tiny_models["text2img_model"]), str(tiny_models["inpaint_model"]), "cpu", "float32")
    assert isinstance(gen.text2img_pipeline(), StableDiffusionPipeline)
    assert isinstance(gen.inpaint_pipeline(), StableDiffusionInpaintPipeline)
    out = gen.text_to_image(["a bowl of soup"], "text", [1], 64, 48, 2)
    assert out[0].size == (64, 48)
    with pytest.raises(ValueError, match="multiples of 8"):
        gen.text_to_image(["x"], None, [1], 60, 64, 2)


@torch.inference_mode()
def generate_chat(lm: CausalLM, conversations: Sequence[Sequence[dict[str, str]]], *,
                  max_new_tokens: int = 256, min_new_tokens: int = 0, do_sample: bool = False,
                  temperature: float = 0.7, seed: int | None = None) -> list[str]:
    """One answer per conversation (a list of ``{"role", "content"}``), generated as one batch:
    the loaded causal LM used directly, without the text backend."""
    model, tok = lm
    prompts = [tok.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
               for c in conversations]
    # The template already carries any BOS it needs.
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                  do_sample=do_sample, pad_token_id=tok.pad_token_id)
    if do_sample:
        kwargs["temperature"] = temperature
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def test_causal_lm_round_trip(tiny_models):
    lm = load_causal_lm(str(tiny_models["text_model"]), "cpu", "float32")
    model, tok = lm
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.chat_template and tok.decode(tok("매콤한 김치찌개").input_ids) == "매콤한 김치찌개"
    answers = generate_chat(lm, [[{"role": "user", "content": "안녕"}], [{"role": "user", "content": "hello"}]],
                            max_new_tokens=5, min_new_tokens=5)
    assert len(answers) == 2


def test_cache_loads_once_under_concurrency(tiny_models):
    cache = ModelCache()
    n = 8
    barrier = threading.Barrier(n)
    got: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            got.append(VlmBackend.load(str(tiny_models["vlm_model"]), "cpu", "float32", cache=cache))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == n and all(g is got[0] for g in got)
    assert cache.load_count("vlm") == 1
    assert cache.load_count("vlm", str(tiny_models["vlm_model"]), "cpu", torch.float32) == 1
    # Another dtype is another model.
    VlmBackend.load(str(tiny_models["vlm_model"]), "cpu", "bfloat16", cache=cache)
    assert cache.load_count("vlm") == 2


def test_cache_slow_loader_runs_once():
    cache = ModelCache()
    calls: list[int] = []
    gate = threading.Event()

    def loader() -> object:
        calls.append(1)
        gate.wait(2)
        return object()

    threads = [threading.Thread(target=cache.get_or_load, args=("k", "src", "cpu", "fp32", loader))
               for _ in range(6)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.load_count() == 1


@pytest.mark.parametrize("loader", ["vlm", "detector", "text2img", "inpaint", "causal_lm"])
def test_missing_model_is_a_clear_error(loader, tmp_path):
    missing = tmp_path / "nowhere" / ("yolov8n.pt" if loader == "detector" else "model")
    cache = ModelCache()
    with pytest.raises(ModelNotFoundError) as err:
        if loader == "vlm":
            VlmBackend.load(str(missing), "cpu", cache=cache)
        elif loader == "detector":
            Detector.load(str(missing), "cpu", cache=cache)
        elif loader == "causal_lm":
            load_causal_lm(str(missing), "cpu", cache=cache)
        else:
            gen = ImageGenerator.create(str(missing), str(missing), "cpu", cache=cache)
            gen.text2img_pipeline() if loader == "text2img" else gen.inpaint_pipeline()
    assert str(missing) in str(err.value)
    assert "variant-pipeline models build-tiny" in str(err.value)
    assert cache.load_counts() == {}


def test_hub_id_offline_without_cache_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelNotFoundError, match="llava-hf/llava-1.5-7b-hf.*VP_ALLOW_NETWORK"):
        VlmBackend.load("llava-hf/llava-1.5-7b-hf", "cpu", allow_network=False, cache=ModelCache())
    with pytest.raises(ModelNotFoundError, match="yolov8x-seg.pt"):
        resolve_yolo_source("yolov8x-seg.pt", allow_network=False)
    # With the network allowed, a bare weight name passes through to ultralytics unchanged.
    assert resolve_yolo_source("yolov8x-seg.pt", allow_network=True) == "yolov8x-seg.pt"


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        VlmBackend.load(str(tmp_path / "empty"), "cpu", cache=ModelCache())


def test_device_and_dtype_selection():
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16  # explicit is honoured
    with pytest.raises(DeviceConfigError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))
    with pytest.raises(DeviceConfigError, match="unknown device|unsupported device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_detector_leaves_torch_threads_alone(tiny_models):
    det = Detector.load(str(tiny_models["detector_model"]), "cpu")
    before = torch.get_num_threads()
    det.predict([_noise(9, (64, 64))])
    assert torch.get_num_threads() == before

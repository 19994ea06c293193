#!/usr/bin/env python
"""Per-stage latency and peak memory of the pipeline's stage functions (a benchmark, not a test).

Default: the tiny offline bundle on this machine's device (built into a temp dir unless
``--models-dir`` points at one). ``--full-size``: the real architectures with random weights
(LLaVA-1.5-7B, YOLOv8x-seg, Stable-Diffusion-1.5-sized UNet/VAE/CLIP) built in memory, meant for a
GPU. Stages written by colleagues (planner, overlay, ocr, readability, iou, copywriting) are imported
guardedly; the table says which ran.

    .venv/bin/python scripts/bench_stages.py                 # tiny, CPU here
    .venv/bin/python scripts/bench_stages.py --variants 3 --repeats 3 --json out.json
    python scripts/bench_stages.py --full-size --device cuda --dtype float16

Latency is per call for a batch of ``--variants`` variants (median of ``--repeats`` after one warm-up
call); peak RSS is sampled during the calls; CUDA peak is ``max_memory_allocated`` per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRss:
    """Samples the resident set every few milliseconds while active."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@dataclass
class Row:
    stage: str
    status: str  # ok | error | skipped
    batch: int = 0
    latency_ms: float | None = None  # median per call
    min_ms: float | None = None
    per_variant_ms: float | None = None
    peak_rss_mb: float | None = None
    cuda_peak_mb: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, device: Any, repeats: int) -> None:
        self.device = device
        self.repeats = repeats
        self.rows: list[Row] = []

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run(self, stage: str, fn: Callable[[], Any], *, batch: int = 1, warmup: bool = True,
            repeats: int | None = None, expected: tuple[type[BaseException], ...] = ()) -> Any:
        """Time ``fn``; returns its last result (None on error). ``expected`` exceptions (e.g. a
        random model's unusable text) still count as a measured call, with a note."""
        import torch

        n = self.repeats if repeats is None else repeats
        times: list[float] = []
        result: Any = None
        note = ""
        cuda = self.device.type == "cuda"
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            with PeakRss() as peak:
                calls = ([False] if warmup else []) + [True] * n
                for timed in calls:
                    self._sync()
                    t0 = time.perf_counter()
                    try:
                        result = fn()
                    except expected as e:
                        note = f"{type(e).__name__}: {str(e)[:80]}"
                        result = None
                    self._sync()
                    if timed:
                        times.append((time.perf_counter() - t0) * 1000)
            med = statistics.median(times)
            self.rows.append(Row(
                stage, "ok", batch, round(med, 1), round(min(times), 1), round(med / max(batch, 1), 1),
                round(peak.peak / 2**20, 1),
                round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1) if cuda else None, note,
            ))
            return result
        except Exception as e:  # a stage that cannot run here (missing engine, font, module)
            self.rows.append(Row(stage, "error", batch, note=f"{type(e).__name__}: {str(e)[:120]}"))
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
            return None

    def skip(self, stage: str, why: str) -> None:
        self.rows.append(Row(stage, "skipped", note=why))


def _try_import(name: str) -> Any:
    try:
        return __import__(f"variant_pipeline.work.{name}", fromlist=["_"])
    except Exception as e:  # noqa: BLE001  (not written yet, or a dependency is missing)
        return e


# --------------------------------------------------------------------------------------------------
# Full-size architectures with random weights.

def full_size_llava(device: Any, dtype: Any, tok_dir: Path) -> Any:
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from variant_pipeline.models.tiny import LLAVA_CHAT_TEMPLATE
    from variant_pipeline.models.vlm import VlmBackend

    tok = AutoTokenizer.from_pretrained(tok_dir)
    # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px + Vicuna-7B (Llama-2-7B shape).
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=576)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    processor.tokenizer.padding_side = "left"
    return VlmBackend(model, processor, "random:llava-1.5-7b", device, dtype)


def full_size_sd(device: Any, dtype: Any, tok_dir: Path) -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    from variant_pipeline.models.image_gen import ImageGenerator

    tok = AutoTokenizer.from_pretrained(tok_dir, model_max_length=77)

    def parts(in_channels: int) -> dict[str, Any]:
        # Stable Diffusion 1.5's shapes: UNet (320, 640, 1280, 1280), VAE (128, 256, 512, 512), CLIP ViT-L text.
        with torch.device(device):
            unet = UNet2DConditionModel(sample_size=64, in_channels=in_channels, out_channels=4,
                                        cross_attention_dim=768, attention_head_dim=8)
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                                block_out_channels=(128, 256, 512, 512), sample_size=512,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id))
        sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
        return dict(unet=unet.to(dtype), vae=vae.to(dtype), text_encoder=text_encoder.to(dtype), tokenizer=tok,
                    scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    t2i = StableDiffusionPipeline(**parts(4))
    inp = StableDiffusionInpaintPipeline(**parts(9))
    for p in (t2i, inp):
        p.set_progress_bar_config(disable=True)
    return ImageGenerator.from_pipelines(t2i, inp, device, dtype)


def full_size_yolo(out_dir: Path) -> Path:
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import ROOT, YAML

    torch.manual_seed(0)
    model = YOLO("yolov8x-seg.yaml")  # the original's detector architecture, random weights
    model.model.names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    path = out_dir / "yolov8x-seg.pt"
    model.save(path)
    return path


# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, help="an existing tiny bundle (default: build one in a temp dir)")
    ap.add_argument("--full-size", action="store_true", help="real architectures, random weights (GPU)")
    ap.add_argument("--allow-cpu-full-size", action="store_true", help="run --full-size without CUDA (slow, ~30 GB)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--variants", type=int, default=3, help="batch size: variants per stage call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=None, help="image side in px (tiny: 256, full: 512)")
    ap.add_argument("--steps", type=int, default=None, help="diffusion steps (tiny: 4, full: 20)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="VLM tokens (tiny: 32, full: 128)")
    ap.add_argument("--json", type=Path, nargs="?", const=Path("-"), help="write rows as JSON (file or - for stdout)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from variant_pipeline.config import DEFAULT_FORBIDDEN_CLASSES
    from variant_pipeline.models.device import resolve
    from variant_pipeline.models.tokenizer import build_tokenizer

    device, dtype = resolve(args.device, args.dtype)
    if args.full_size and device.type != "cuda" and not args.allow_cpu_full_size:
        print("--full-size needs CUDA (or --allow-cpu-full-size)", file=sys.stderr)
        return 2
    size = args.size or (512 if args.full_size else 256)
    steps = args.steps or (20 if args.full_size else 4)
    max_new = args.max_new_tokens or (128 if args.full_size else 32)
    n = args.variants
    bench = Bench(device, args.repeats)
    tmp = Path(tempfile.mkdtemp(prefix="vp-bench-"))
    t_start = time.perf_counter()

    from variant_pipeline.models.detector import Detector
    from variant_pipeline.models.image_gen import ImageGenerator
    from variant_pipeline.models.vlm import VlmBackend

    causal_lm_path: Path | None = None
    if args.full_size:
        tok_dir = build_tokenizer(tmp / "tokenizer")
        vlm = bench.run("load:vlm (LLaVA-1.5-7B shape)", lambda: full_size_llava(device, dtype, tok_dir),
                        warmup=False, repeats=1)
        gen = bench.run("load:image_gen (SD-1.5 shape x2)", lambda: full_size_sd(device, dtype, tok_dir),
                        warmup=False, repeats=1)
        yolo_path = bench.run("build:yolov8x-seg", lambda: full_size_yolo(tmp), warmup=False, repeats=1)
        det = bench.run("load:detector", lambda: Detector.load(str(yolo_path), device, dtype),
                        warmup=False, repeats=1) if yolo_path else None
    else:
        root = args.models_dir
        if root is None:
            from variant_pipeline.models.tiny import build_tiny_bundle

            root = tmp / "tiny"
            bench.run("build_tiny_bundle", lambda: build_tiny_bundle(root), warmup=False, repeats=1)
        from variant_pipeline.models.registry import tiny_defaults

        tiny = tiny_defaults(root)
        vlm = bench.run("load:vlm", lambda: VlmBackend.load(tiny["vlm_model"], device, dtype),
                        warmup=False, repeats=1)
        det = bench.run("load:detector", lambda: Detector.load(tiny["detector_model"], device, dtype),
                        warmup=False, repeats=1)

        def _load_gen() -> ImageGenerator:
            g = ImageGenerator.create(tiny["text2img_model"], tiny["inpaint_model"], device, dtype)
            g.text2img_pipeline()
            g.inpaint_pipeline()
            return g

        gen = bench.run("load:image_gen", _load_gen, warmup=False, repeats=1)
        causal_lm_path = Path(tiny["text_model"])

    # ---- img_gen
    from variant_pipeline.work import img_gen as ig

    prompt = "a bowl of kimchi stew on a dark wooden table, warm light"
    images: list[Image.Image] = [Image.new("RGB", (size, size), (90, 60, 40))] * n
    if gen is not None:
        out = bench.run("img_gen (text2img)", lambda: ig.generate_variants(gen, ig.ImgGenRequest(
            "bench", prompt, n_variants=n, width=size, height=size, steps=steps)), batch=n)
        if out:
            images = [v.image for v in out]
        rng = np.random.RandomState(0)
        prod = np.zeros((size // 2, size // 2, 4), np.uint8)
        prod[..., :3] = rng.randint(0, 256, prod[..., :3].shape)
        prod[size // 8: -size // 8, size // 8: -size // 8, 3] = 255
        product = Image.fromarray(prod, "RGBA")
        bench.run("img_gen (inpaint, product)", lambda: ig.generate_variants(gen, ig.ImgGenRequest(
            "bench", prompt, product_image=product, n_variants=n, width=size, height=size, steps=steps)), batch=n)
    else:
        bench.skip("img_gen", "image generator did not load")

    # ---- vlm_analyze
    from variant_pipeline.work import vlm as vw
    from variant_pipeline.work.types import Brief

    overlay_text = "따뜻한 김치찌개"
    ad_copy = "A hearty, spicy kimchi stew for cold winter nights."
    opts = vw.VlmOptions(max_new_tokens=max_new, min_new_tokens=min(8, max_new))
    if vlm is not None:
        bench.run("vlm_analyze (3 generations)", lambda: vw.analyze_batch(
            vlm, [vw.AnalyzeInput(im, ad_copy, overlay_text, seed=50 * (i + 1)) for i, im in enumerate(images)],
            opts), batch=n)
    else:
        bench.skip("vlm_analyze", "VLM did not load")

    # ---- yolo_detect
    from variant_pipeline.work import detect as dw

    detections = None
    if det is not None:
        detections = bench.run("yolo_detect", lambda: dw.detect(
            det, images, forbidden_classes=DEFAULT_FORBIDDEN_CLASSES, conf=0.25), batch=n)
    else:
        bench.skip("yolo_detect", "detector did not load")
    if detections is None:  # planted boxes so the downstream stages have something to avoid
        from variant_pipeline.work.types import RawDetection

        fb = frozenset(DEFAULT_FORBIDDEN_CLASSES)
        raw = [RawDetection(45, "bowl", 0.9, (size * 0.3, size * 0.4, size * 0.7, size * 0.9))]
        dets = dw.to_detections(raw, size, size, fb)
        detections = [dw.DetectionResult(size, size, dets, dw.forbidden_mask(dets, size, size)) for _ in images]

    # ---- planner, overlay (colleagues' modules)
    planner, overlay = _try_import("planner"), _try_import("overlay")
    plans = overlays = None
    if isinstance(planner, Exception):
        bench.skip("planner", f"not importable: {planner}")
    else:
        plans = bench.run("planner", lambda: [planner.plan_placements(
            d.width, d.height, d.detections, np.asarray(d.forbidden_mask)) for d in detections], batch=n)
    if isinstance(overlay, Exception):
        bench.skip("overlay", f"not importable: {overlay}")
    elif plans:
        overlays = bench.run("overlay", lambda: [overlay.render_overlay(im, overlay_text, p)
                                                 for im, p in zip(images, plans, strict=True)], batch=n)
    else:
        bench.skip("overlay", "no planner result")

    # ---- vlm_judge
    judged_images = [o.image for o in overlays] if overlays else images
    if vlm is not None:
        brief = Brief("김치찌개", desc_eng="kimchi stew", ad_copy_eng=ad_copy)
        bench.run("vlm_judge", lambda: vw.judge_batch(
            vlm, [vw.JudgeInput(im, brief, overlay_text) for im in judged_images], opts), batch=n)
    else:
        bench.skip("vlm_judge", "VLM did not load")

    # ---- evaluations
    ocr, readability, iou = _try_import("ocr"), _try_import("readability"), _try_import("iou")
    if overlays:
        if isinstance(ocr, Exception):
            bench.skip("ocr_eval", f"not importable: {ocr}")
        else:
            from variant_pipeline.config import load_settings
            from variant_pipeline.models.ocr import TesseractOcr

            engine = TesseractOcr(cmd=load_settings().tesseract_cmd)
            bench.run("ocr_eval", lambda: [ocr.evaluate_ocr(engine, o.image, o.text_bbox_px, overlay_text,
                                                            font_size_px=o.font_size_px) for o in overlays], batch=n)
        if isinstance(readability, Exception):
            bench.skip("readability_eval", f"not importable: {readability}")
        else:
            bench.run("readability_eval", lambda: [readability.evaluate_readability(
                im, o.glyph_mask, o.text_bbox_px, o.color_rgb, o.font_size_px, bold=o.bold)
                for im, o in zip(images, overlays, strict=True)], batch=n)
        if isinstance(iou, Exception):
            bench.skip("iou_eval", f"not importable: {iou}")
        else:
            bench.run("iou_eval", lambda: [iou.evaluate_iou(o.box, o.text_box, d.detections)
                                           for o, d in zip(overlays, detections, strict=True)], batch=n)
    else:
        for s in ("ocr_eval", "readability_eval", "iou_eval"):
            bench.skip(s, "no overlay result")

    # ---- job-level text stages (local causal LM)
    cw = _try_import("copywriting")
    if isinstance(cw, Exception):
        bench.skip("ad_copy_gen_kor", "copywriting not importable")
    elif causal_lm_path is None:
        bench.skip("ad_copy_gen_kor", "no causal LM in --full-size mode (the original used an API model)")
    else:
        from variant_pipeline.models.text import LocalCausalLMBackend

        lm = LocalCausalLMBackend(str(causal_lm_path), str(device), str(dtype).removeprefix("torch."),
                                     max_new_tokens_cap=max_new)
        bench.run("load:causal_lm", lm.load, warmup=False, repeats=1)
        expected = (cw.TextStageError,)
        bench.run("ad_copy_gen_kor", lambda: cw.ad_copy_gen_kor(lm, ad_copy, seed=1), expected=expected)
        bench.run("instagram_feed_gen", lambda: cw.instagram_feed_gen(lm, cw.FeedInputs(
            ad_copy_eng=ad_copy, product_description="얼큰한 김치찌개", ad_copy_kor=overlay_text), seed=1),
            expected=expected)

    total_s = time.perf_counter() - t_start
    meta = {
        "mode": "full-size (random weights)" if args.full_size else "tiny",
        "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(), "variants": n, "repeats": args.repeats, "image_size": size,
        "diffusion_steps": steps, "vlm_max_new_tokens": max_new, "total_s": round(total_s, 1),
        "final_rss_mb": round(rss_bytes() / 2**20, 1),
        "measured": [r.stage for r in bench.rows if r.status == "ok"],
        "not_measured": {r.stage: r.note for r in bench.rows if r.status != "ok"},
    }
    _print_table(bench.rows, meta)
    if args.json:
        payload = json.dumps({"meta": meta, "rows": [r.__dict__ for r in bench.rows]}, indent=2, ensure_ascii=False)
        if str(args.json) == "-":
            print(payload)
        else:
            args.json.write_text(payload)
    return 0


def _print_table(rows: list[Row], meta: dict[str, Any]) -> None:
    print(f"\n{meta['mode']} | device {meta['device']} {meta['gpu'] or ''} | dtype {meta['dtype']} | "
          f"{meta['variants']} variants/call | {meta['repeats']} repeats | {meta['image_size']}px | "
          f"{meta['diffusion_steps']} steps | {meta['vlm_max_new_tokens']} VLM tokens | "
          f"CPU threads {meta['cpu_threads']}")
    head = f"{'stage':34} {'status':7} {'batch':>5} {'median ms':>10} {'min ms':>9} {'ms/variant':>10} {'peak RSS MB':>11} {'CUDA MB':>9}  note"
    print(head)
    print("-" * len(head))

    def f(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    for r in rows:
        print(f"{r.stage:34} {r.status:7} {r.batch or '':>5} {f(r.latency_ms):>10} {f(r.min_ms):>9} "
              f"{f(r.per_variant_ms):>10} {f(r.peak_rss_mb):>11} {f(r.cuda_peak_mb):>9}  {r.note}")
    print(f"total {meta['total_s']} s, final RSS {meta['final_rss_mb']} MB")


if __name__ == "__main__":
    raise SystemExit(main())

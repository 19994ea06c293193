"""Vision-language model backend (LLaVA and other image-text-to-text models via transformers).

One instance serves vlm_analyze and vlm_judge. ``generate`` takes a batch (images + prompts) and
returns the answer text only (the prompt tokens are sliced off, not searched for "ASSISTANT:").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from variant_pipeline.models.cache import MODEL_CACHE, ModelCache, resolve_hf_source
from variant_pipeline.models.device import resolve
from variant_pipeline.models.registry import model_location

if TYPE_CHECKING:
    from variant_pipeline.config import Settings

log = logging.getLogger(__name__)

# LLaVA-1.5's conversation format, used when a processor ships no chat template.
FALLBACK_PROMPT = "USER: <image>\n{prompt} ASSISTANT:"
_CUBLAS_ERROR = "'CUBLAS_Context' object has no attribute 'context'"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class _SeededSampler:
    """Temperature sampling with one RNG per batch row, as a logits processor under greedy search.

    Each row draws its token from its own ``torch.Generator`` and every other token is masked, so
    greedy search picks the draw. A batch thus samples reproducibly per item (same seed → same
    answer, up to batch numerics) without one generate call per item or the global RNG.
    """

    def __init__(self, seeds: Sequence[int], temperature: float) -> None:
        self.seeds = [int(s) for s in seeds]
        self.temperature = max(float(temperature), 1e-5)
        self._gens: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._gens is None:
            self._gens = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for i, gen in enumerate(self._gens):
            row = probs[i]
            if not torch.isfinite(row).all() or float(row.sum()) <= 0:
                token = int(torch.argmax(torch.nan_to_num(scores[i], nan=float("-inf"))))  # degenerate logits
            else:
                token = int(torch.multinomial(row, 1, generator=gen))
            out[i, token] = 0.0
        return out


@dataclass
class VlmBackend:
    model: Any
    processor: Any
    source: str
    device: torch.device
    dtype: torch.dtype
    quantized_8bit: bool = False

    def __post_init__(self) -> None:
        # One batch at a time per model instance (the processor is not re-entrant, and concurrent
        # generate calls on one GPU model only contend). Throughput comes from batching variants.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, location: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
             load_in_8bit: bool = False, allow_network: bool | None = None,
             cache: ModelCache = MODEL_CACHE) -> VlmBackend:
        """Load once per process. ``load_in_8bit`` (CUDA + bitsandbytes) mirrors the original's default."""
        source = resolve_hf_source(location, "vision-language", allow_network=allow_network)
        dev, dt = resolve(device, dtype)
        if load_in_8bit and dev.type != "cuda":
            raise ValueError("load_in_8bit needs a CUDA device (bitsandbytes)")

        def _load() -> VlmBackend:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            _quiet_transformers()
            log.info("loading vision-language model %s on %s (%s)", source, dev, dt)
            processor = AutoProcessor.from_pretrained(source)
            processor.tokenizer.padding_side = "left"
            if load_in_8bit:
                from transformers import BitsAndBytesConfig

                model = AutoModelForImageTextToText.from_pretrained(
                    source, quantization_config=BitsAndBytesConfig(load_in_8bit=True), dtype=dt,
                    device_map={"": dev.index or 0},
                )
            else:
                model = AutoModelForImageTextToText.from_pretrained(source, dtype=dt).to(dev)
            return cls(model.eval(), processor, source, dev, dt, load_in_8bit)

        return cache.get_or_load("vlm" + ("-8bit" if load_in_8bit else ""), source, dev, dt, _load)

    def format_prompt(self, prompt: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return FALLBACK_PROMPT.format(prompt=prompt)

    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str], *, do_sample: bool = False,
                 temperature: float = 0.7, max_new_tokens: int = 256, min_new_tokens: int = 0,
                 seed: int | Sequence[int] | None = None) -> list[str]:
        """One answer per (image, prompt). Greedy unless ``do_sample``; with sampling, ``seed`` (one
        for all, or one per item) makes each answer reproducible whatever else is in the batch."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        texts = [self.format_prompt(p) for p in prompts]
        rgb = [im.convert("RGB") for im in images]
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, min_new_tokens=min(min_new_tokens, max_new_tokens),
            do_sample=do_sample, pad_token_id=self.processor.tokenizer.pad_token_id,
        )
        if do_sample:
            gen_kwargs["temperature"] = temperature
        if do_sample and seed is not None:
            seeds = [seed] * len(rgb) if isinstance(seed, int) else list(seed)
            if len(seeds) != len(rgb):
                raise ValueError(f"{len(rgb)} images but {len(seeds)} seeds")
            # Seeded: per-row RNGs inside one batched call, so an item's answer follows its own seed.
            from transformers import LogitsProcessorList

            gen_kwargs.pop("temperature")
            gen_kwargs["do_sample"] = False
            gen_kwargs["logits_processor"] = LogitsProcessorList([_SeededSampler(seeds, temperature)])
        with self._lock:
            return self._run(rgb, texts, gen_kwargs)

    @torch.inference_mode()
    def _run(self, images: list[Image.Image], texts: list[str], gen_kwargs: dict[str, Any]) -> list[str]:
        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        attempts = 3 if self.quantized_8bit else 1
        for attempt in range(1, attempts + 1):
            try:
                out = self.model.generate(**inputs, **gen_kwargs)
                break
            except AttributeError as e:
                # bitsandbytes 8-bit kernels fail now and then under concurrent inference (the original
                # retried them too); only retried when quantized.
                if _CUBLAS_ERROR not in str(e) or attempt == attempts:
                    raise
                log.warning("bitsandbytes CUBLAS context error, retry %d/%d", attempt, attempts - 1)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                time.sleep(0.5)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def load_vlm(settings: Settings) -> VlmBackend:
    """The registry's loader: the configured vision-language model, once per process."""
    return VlmBackend.load(model_location(settings, "vlm_model"), settings.device, settings.dtype,
                           load_in_8bit=settings.vlm_load_in_8bit, allow_network=settings.allow_network)

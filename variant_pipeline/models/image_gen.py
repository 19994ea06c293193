"""Image generation backend (diffusers): text-to-image and inpainting pipelines.

Loaded only through ``AutoPipelineForText2Image`` / ``AutoPipelineForInpainting.from_pretrained``; each
pipeline loads on first use (a job with product photos never needs the text-to-image one).
``ImageGenerator`` implements ``work.img_gen.DiffusionModel``, what the img_gen stage asks of it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from variant_pipeline.models.cache import MODEL_CACHE, ModelCache, resolve_hf_source
from variant_pipeline.models.device import resolve
from variant_pipeline.models.registry import model_location

if TYPE_CHECKING:
    from variant_pipeline.config import Settings


def _load_pipeline(kind: str, location: str, dev: torch.device, dt: torch.dtype,
                   allow_network: bool | None, cache: ModelCache) -> Any:
    source = resolve_hf_source(location, f"image generation ({kind})", marker="model_index.json",
                               allow_network=allow_network)

    def _load() -> Any:
        from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars in run logs
        auto = AutoPipelineForText2Image if kind == "text2img" else AutoPipelineForInpainting
        pipe = auto.from_pretrained(source, dtype=dt).to(dev)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return cache.get_or_load(f"diffusers-{kind}", source, dev, dt, _load)


def _check_size(width: int, height: int) -> None:
    if width % 8 or height % 8 or width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive multiples of 8, got {width}x{height}")


@dataclass
class ImageGenerator:
    text2img_location: str
    inpaint_location: str
    device: torch.device
    dtype: torch.dtype
    allow_network: bool | None = None
    cache: ModelCache = MODEL_CACHE
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Pipelines built in memory (the benchmark's full-size random models); None: load by location.
    _pipes: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, text2img_location: str, inpaint_location: str, device: str | torch.device = "auto",
               dtype: str | torch.dtype = "auto", *, allow_network: bool | None = None,
               cache: ModelCache = MODEL_CACHE) -> ImageGenerator:
        """Resolve device/dtype now; the pipelines load (once per process) when first used."""
        dev, dt = resolve(device, dtype)
        return cls(text2img_location, inpaint_location, dev, dt, allow_network, cache)

    @classmethod
    def from_pipelines(cls, text2img: Any, inpaint: Any, device: torch.device, dtype: torch.dtype) -> ImageGenerator:
        """Wrap pipelines already in memory (benchmarks of random full-size architectures)."""
        gen = cls("<in-memory>", "<in-memory>", device, dtype)
        gen._pipes.update(text2img=text2img, inpaint=inpaint)
        return gen

    def text2img_pipeline(self) -> Any:
        if "text2img" in self._pipes:
            return self._pipes["text2img"]
        return _load_pipeline("text2img", self.text2img_location, self.device, self.dtype,
                              self.allow_network, self.cache)

    def inpaint_pipeline(self) -> Any:
        if "inpaint" in self._pipes:
            return self._pipes["inpaint"]
        return _load_pipeline("inpaint", self.inpaint_location, self.device, self.dtype,
                              self.allow_network, self.cache)

    def _generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        # One generator per image: each image depends on its own seed only, not on the batch.
        gen_device = "cpu" if self.device.type == "mps" else self.device
        return [torch.Generator(device=gen_device).manual_seed(int(s)) for s in seeds]

    def text_to_image(self, prompts: Sequence[str], negative: Sequence[str] | str | None, seeds: Sequence[int],
                      width: int, height: int, steps: int, *, guidance_scale: float = 7.5) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        _check_size(width, height)
        pipe = self.text2img_pipeline()
        with self._lock, torch.inference_mode():
            result = pipe(
                prompt=list(prompts), negative_prompt=_negatives(negative, len(prompts)),
                width=width, height=height, num_inference_steps=steps, guidance_scale=guidance_scale,
                generator=self._generators(seeds), output_type="pil",
            )
        return list(result.images)

    def inpaint(self, images: Sequence[Image.Image], masks: Sequence[Image.Image], prompts: Sequence[str],
                negative: Sequence[str] | str | None, seeds: Sequence[int], steps: int, *,
                guidance_scale: float = 7.5, strength: float = 1.0) -> list[Image.Image]:
        """Repaint where ``mask`` is white (255); keep where black. Output has the input's size."""
        n = len(images)
        if not (len(masks) == len(prompts) == len(seeds) == n):
            raise ValueError("images, masks, prompts and seeds must have the same length")
        if n == 0:
            return []
        width, height = images[0].size
        _check_size(width, height)
        if any(im.size != (width, height) or m.size != (width, height) for im, m in zip(images, masks, strict=True)):
            raise ValueError("all images and masks in one inpaint batch must have the same size")
        pipe = self.inpaint_pipeline()
        with self._lock, torch.inference_mode():
            result = pipe(
                prompt=list(prompts), negative_prompt=_negatives(negative, n),
                image=[im.convert("RGB") for im in images], mask_image=[m.convert("L") for m in masks],
                width=width, height=height, num_inference_steps=steps, guidance_scale=guidance_scale,
                strength=strength, generator=self._generators(seeds), output_type="pil",
            )
        return list(result.images)


def _negatives(negative: Sequence[str] | str | None, n: int) -> list[str] | None:
    if negative is None:
        return None
    if isinstance(negative, str):
        return [negative] * n
    if len(negative) != n:
        raise ValueError(f"{n} prompts but {len(negative)} negative prompts")
    return list(negative)


def load_image_generator(settings: Settings) -> ImageGenerator:
    """The registry's loader: both configured pipelines, each loaded (once) when first used."""
    return ImageGenerator.create(model_location(settings, "text2img_model"), model_location(settings, "inpaint_model"),
                                 settings.device, settings.dtype, allow_network=settings.allow_network)

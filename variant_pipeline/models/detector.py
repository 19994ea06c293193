"""Object detector backend (ultralytics YOLO), loaded only through ``YOLO(path)``.

``Detector`` implements ``work.detect.ObjectDetector``, what the yolo_detect stage asks of a detector.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from variant_pipeline.models.cache import MODEL_CACHE, ModelCache, resolve_yolo_source
from variant_pipeline.models.device import resolve
from variant_pipeline.models.registry import model_location
from variant_pipeline.work.types import RawDetection

if TYPE_CHECKING:
    from variant_pipeline.config import Settings


@dataclass
class Detector:
    model: Any  # ultralytics.YOLO
    source: str
    device: torch.device
    dtype: torch.dtype

    def __post_init__(self) -> None:
        # An ultralytics predictor keeps per-call state on the model object: one call at a time.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, location: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
             allow_network: bool | None = None, cache: ModelCache = MODEL_CACHE) -> Detector:
        source = resolve_yolo_source(location, allow_network=allow_network)
        dev, dt = resolve(device, dtype)

        def _load() -> Detector:
            from ultralytics import YOLO

            return cls(YOLO(source), source, dev, dt)

        return cache.get_or_load("detector", source, dev, dt, _load)

    @property
    def class_names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.model.names.items()}

    def predict(self, images: Sequence[Image.Image], conf: float = 0.25, iou: float = 0.45, *,
                imgsz: int | None = None, max_det: int = 300) -> list[list[RawDetection]]:
        """Detections per image (boxes only; segmentation masks, if any, are not used)."""
        if not images:
            return []
        names = self.class_names
        kwargs: dict[str, Any] = dict(conf=conf, iou=iou, max_det=max_det, verbose=False,
                                      device=str(self.device),
                                      half=self.device.type == "cuda" and self.dtype == torch.float16)
        if imgsz is not None:
            kwargs["imgsz"] = imgsz
        with self._lock:
            # ultralytics' device selection calls torch.set_num_threads(cpu_count - 1) on CPU, a
            # process-wide change that would slow every other model in the run: put it back.
            threads = torch.get_num_threads()
            try:
                results = self.model.predict([im.convert("RGB") for im in images], **kwargs)
            finally:
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
        out: list[list[RawDetection]] = []
        for r in results:
            boxes = r.boxes
            xyxy = boxes.xyxy.float().cpu().tolist()
            scores = boxes.conf.float().cpu().tolist()
            classes = boxes.cls.int().cpu().tolist()
            out.append([
                RawDetection(c, names.get(c, str(c)), float(s), tuple(float(v) for v in b))  # type: ignore[arg-type]
                for b, s, c in zip(xyxy, scores, classes, strict=True)
            ])
        return out


def load_detector(settings: Settings) -> Detector:
    """The registry's loader: the configured detector, once per process."""
    return Detector.load(model_location(settings, "detector_model"), settings.device, settings.dtype,
                         allow_network=settings.allow_network)

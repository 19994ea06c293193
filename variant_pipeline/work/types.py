"""Value types shared by several stages.

Boxes are normalized ``(x, y, w, h)`` in 0..1 of the image they belong to unless a name says
``_px`` (pixels, ``(x1, y1, x2, y2)``). Stage-specific result types live with their stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RawDetection:
    """One box as the detector gave it, in pixels of the input image. Defined here, not with the
    detector, so a run served by a model server unpickles it without importing torch."""

    class_id: int
    label: str
    score: float
    box_px: tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class NormBox:
    """Normalized (x, y, w, h), all in 0..1 of the image."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return max(0.0, self.w) * max(0.0, self.h)

    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def to_px(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixel (x1, y1, x2, y2), rounded outwards and clamped to the image."""
        x1 = max(0, int(self.x * width))
        y1 = max(0, int(self.y * height))
        x2 = min(width, int(round((self.x + self.w) * width)))
        y2 = min(height, int(round((self.y + self.h) * height)))
        return (x1, y1, x2, y2)

    @classmethod
    def from_px(cls, box: tuple[float, float, float, float], width: int, height: int) -> NormBox:
        x1, y1, x2, y2 = box
        return cls(x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height)

    def as_list(self) -> list[float]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class Detection:
    """One detector box on one variant image."""

    label: str
    class_id: int
    score: float
    box_px: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the variant image
    box: NormBox
    forbidden: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = self.box.as_list()
        d["box_px"] = list(self.box_px)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Detection:
        return cls(
            label=d["label"], class_id=int(d["class_id"]), score=float(d["score"]),
            box_px=tuple(float(v) for v in d["box_px"]),  # type: ignore[arg-type]
            box=NormBox(*[float(v) for v in d["box"]]), forbidden=bool(d["forbidden"]),
        )


@dataclass(frozen=True)
class Brief:
    """The job's texts every stage reads: given with the job, or written once by the text model."""

    desc_kor: str  # the product, in Korean (always given)
    desc_eng: str = ""  # the product, in English
    ad_copy_eng: str = ""  # English ad copy
    ad_copy_kor: str = ""  # the short Korean line the overlay draws
    generated: tuple[str, ...] = ()  # which of them the text model wrote (the rest came with the job)


@dataclass(frozen=True)
class FontRecommendation:
    """What the vision-language model suggested for the overlay text (each field may be unknown)."""

    style: str | None = None  # serif | sans-serif | bold | italic
    name: str | None = None
    size_category: str | None = None  # small | medium | large
    color_hex: str | None = None  # RRGGBB, no '#'
    reasoning: str | None = None
    unparsed: tuple[str, ...] = field(default_factory=tuple)  # fields the parser could not read

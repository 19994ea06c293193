"""Input limits and checks for job submission, defined once.

Every check raises ``InputError`` with a message that says what is wrong; callers (the CLI)
print it as one line. Nothing here touches the database or writes files.
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

MIN_VARIANTS = 1
MAX_VARIANTS = 16
DEFAULT_VARIANTS = 3

# Character limits (after trimming surrounding whitespace).
MAX_DESCRIPTION_CHARS = 1000
MAX_AD_COPY_EN_CHARS = 500
MAX_AD_COPY_KOR_CHARS = 40  # drawn on the image, so it must stay short
MAX_PROMPT_CHARS = 1000
MAX_TENANT_NAME_CHARS = 200

# Product photo limits.
MAX_IMAGE_BYTES = 25 * 1024 * 1024
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 40_000_000

# Tenant ids are part of asset paths: one safe path segment (mirrors the CHECK in sql/001).
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InputError(ValueError):
    """User input that fails a check; the message is meant to be shown as is."""


def check_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID_RE.fullmatch(tenant_id):
        raise InputError(
            f"invalid tenant id {tenant_id!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return tenant_id


def parse_uuid(value: str, what: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise InputError(f"malformed {what} {value!r}: expected a UUID like 123e4567-e89b-12d3-a456-426614174000") from None


def check_text(value: str | None, what: str, limit: int, *, required: bool = False,
               single_line: bool = False) -> str | None:
    """Trimmed text within its limit; None stays None unless the field is required.

    Control characters are refused with their position (1-based, in the text as given); line
    breaks and tabs are allowed unless the field is ``single_line`` (copy drawn on the image).
    """
    if value is None:
        if required:
            raise InputError(f"{what} is required")
        return None
    text = value.strip()
    if not text:
        if required:
            raise InputError(f"{what} must not be empty")
        raise InputError(f"{what} must not be empty when given (leave it out instead)")
    if len(text) > limit:
        raise InputError(f"{what} is {len(text)} characters long; the limit is {limit}")
    allowed = "" if single_line else "\t\n\r"
    for position, ch in enumerate(value, start=1):
        if unicodedata.category(ch) == "Cc" and ch not in allowed:
            raise InputError(f"{what} contains the control character U+{ord(ch):04X} at position {position}")
    return text


def check_variant_count(n: int) -> int:
    if not MIN_VARIANTS <= n <= MAX_VARIANTS:
        raise InputError(f"number of variants must be between {MIN_VARIANTS} and {MAX_VARIANTS}, got {n}")
    return n


@dataclass(frozen=True)
class CheckedImage:
    path: Path
    width: int
    height: int
    format: str


def check_image_file(path: Path) -> CheckedImage:
    """The file exists, is a decodable image, and is within the size limits."""
    checked, _image = load_image_file(path)
    return checked


def load_image_file(path: Path) -> tuple[CheckedImage, Image.Image]:
    """Every check of ``check_image_file``, and the decoded image (the file is closed on return).

    The dimensions are checked from the header, before any pixel is decoded, so a huge image is
    refused without allocating it. The CLI and the pipeline stages both read photos through here.
    """
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if not path.is_file():
        raise InputError(f"image path is not a file: {path}")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:  # before reading it into memory
        raise InputError(f"image file is {size} bytes; the limit is {MAX_IMAGE_BYTES}: {path}")
    checked, image = load_image_bytes(path.read_bytes(), str(path))
    return CheckedImage(path=path, width=checked.width, height=checked.height, format=checked.format), image


def load_image_bytes(data: bytes, name: str) -> tuple[CheckedImage, Image.Image]:
    """``load_image_file``'s checks and decoding for an image already read (``name`` says from where)."""
    path = name
    size = len(data)
    if size == 0:
        raise InputError(f"image file is empty: {path}")
    if size > MAX_IMAGE_BYTES:
        raise InputError(f"image file is {size} bytes; the limit is {MAX_IMAGE_BYTES}: {path}")
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 Mpx; our own limit is lower and checked below, with a clear message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height, fmt = img.width, img.height, img.format or "unknown"
                check_image_dimensions(width, height, path)
                img.verify()  # structure check without decoding everything
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # decode: truncated or corrupt pixel data fails here
                image = normalize_image(img, path)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        # PIL refuses to open it at all (over ~179 Mpx), before we could check the header's size.
        header = _header_size(data, path)
        if header is not None:
            check_image_dimensions(*header, path)
        raise InputError(
            f"image is far too large ({exc}); the limit is {MAX_IMAGE_SIDE} px a side and "
            f"{MAX_IMAGE_PIXELS} pixels: {path}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not a readable image: {path} ({exc.__class__.__name__}: {exc})") from None
    except ImportError:
        # Once ultralytics is imported, Image.open answers a file PIL cannot identify by loading a
        # HEIF plugin that is not installed: the same unreadable file, another exception.
        raise InputError(f"not a readable image: {path} (UnidentifiedImageError: cannot identify image file)") from None
    return CheckedImage(path=Path(path), width=width, height=height, format=fmt), image


# Modes whose pixels carry transparency: the product's cut-out, kept as RGBA for img_gen.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def normalize_image(image: Image.Image, path: Path | str) -> Image.Image:
    """``image`` upright (its EXIF orientation applied) as 8-bit RGB, or RGBA when it has transparency.

    Photos arrive in every mode Pillow opens: CMYK JPEGs from print workflows, 16-bit and float
    greyscale, palettes with a transparent colour, greyscale with alpha, LAB and YCbCr TIFFs. The
    stages and the asset store expect RGB(A); a mode that cannot be converted is refused in one line.
    """
    try:
        upright = ImageOps.exif_transpose(image) or image
    except (ValueError, OSError, SyntaxError, struct.error):
        upright = image  # an unreadable orientation tag: the pixels are as stored
    mode = upright.mode
    try:
        if mode in _ALPHA_MODES or (mode == "P" and "transparency" in upright.info):
            return upright.convert("RGBA")
        if mode in ("I", "F") or mode.startswith("I;16"):
            return _to_8bit(upright).convert("RGB")
        if mode == "LAB":
            return ImageCms.applyTransform(upright, ImageCms.buildTransform(
                ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"))
        if mode == "CMYK" and upright.info.get("icc_profile"):
            # Print-workflow CMYK carries its profile; the naive formula would shift every colour.
            try:
                profile = ImageCms.ImageCmsProfile(io.BytesIO(upright.info["icc_profile"]))
                return ImageCms.profileToProfile(upright, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
            except (ImageCms.PyCMSError, OSError):
                pass  # a broken embedded profile: fall back to the plain conversion below
        return upright.convert("RGB")
    except (ValueError, OSError, ImageCms.PyCMSError) as exc:
        raise InputError(f"image mode {mode} cannot be converted to RGB ({exc}): {path}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or float greyscale scaled to 8 bits by its value range (not clipped at 255)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    else:
        scaled = values / (65535.0 if values.max(initial=0) > 255 else 255.0) * 255.0
    return Image.fromarray(np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8), mode="L")


def _header_size(data: bytes, path: str) -> tuple[int, int] | None:
    """Width and height from the file's header, as Image.open reads them but without its
    decompression-bomb refusal (used only to name the size of an image PIL refused)."""
    Image.init()
    with io.BytesIO(data) as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            accepted = accept is None or accept(prefix)
            if isinstance(accepted, str) or not accepted:
                continue
            try:
                fp.seek(0)
                return factory(fp, str(path)).size
            except Exception:  # not this format (or a broken header): try the next
                continue
    return None


def check_image_dimensions(width: int, height: int, path: Path | str) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"image is {width}x{height}; each side must be at least {MIN_IMAGE_SIDE} px: {path}")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image is {width}x{height}; the limit is {MAX_IMAGE_SIDE} px a side and "
            f"{MAX_IMAGE_PIXELS} pixels: {path}"
        )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a sum such as ``1d12h``; more than zero."""
    value = (text or "").strip().lower()
    parts = _DURATION_PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise InputError(f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. 30d or 1d12h")
    seconds = sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    if seconds <= 0:
        raise InputError(f"invalid duration {text!r}: must be more than zero")
    return timedelta(seconds=seconds)

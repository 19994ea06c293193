"""Asset files per tenant under one root directory.

The database stores paths relative to the root (``image_assets.path``), so the root can move
(another disk, another machine's mount) without rewriting rows. Files are written under a
temporary name and renamed, so a reader never sees half an image.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from PIL import Image

from variant_pipeline.validation import InputError, check_tenant_id

_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


@dataclass(frozen=True)
class StoredImage:
    relative_path: str  # POSIX, relative to the store root: what image_assets.path holds
    path: Path  # absolute
    width: int
    height: int
    sha256: str


class AssetStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def save_image(self, tenant_id: str, kind: str, image: Image.Image, fmt: str = "PNG") -> StoredImage:
        """Write ``image`` to ``root/tenants/{tenant}/{kind}/YYYY/MM/DD/{uuid}.{ext}``."""
        check_tenant_id(tenant_id)
        if not _KIND_RE.fullmatch(kind):
            raise InputError(f"invalid asset kind {kind!r}: use lower-case letters, digits, '_' or '-'")
        fmt = fmt.upper()
        if fmt not in _EXTENSIONS:
            raise InputError(f"unsupported image format {fmt!r}; use one of {', '.join(_EXTENSIONS)}")
        if fmt == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        data = buffer.getvalue()

        day = datetime.now(UTC)
        relative = PurePosixPath(
            "tenants", tenant_id, kind, f"{day:%Y}", f"{day:%m}", f"{day:%d}", f"{uuid.uuid4()}{_EXTENSIONS[fmt]}"
        )
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        return StoredImage(
            relative_path=str(relative),
            path=target,
            width=image.width,
            height=image.height,
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def path_for(self, relative_path: str) -> Path:
        """Absolute path of a stored file; refuses paths that would leave the root."""
        rel = PurePosixPath(relative_path)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise InputError(f"invalid asset path {relative_path!r}: must be relative to the asset root")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise InputError(f"invalid asset path {relative_path!r}: leaves the asset root")
        return path

    def open_image(self, relative_path: str) -> Image.Image:
        """Load a stored image fully into memory (the file is closed on return)."""
        with Image.open(self.path_for(relative_path)) as img:
            img.load()
            return img.copy()

    def delete(self, relative_path: str) -> None:
        """Remove a stored file (used to undo a save when the database transaction fails)."""
        self.path_for(relative_path).unlink(missing_ok=True)

"""Asset files per tenant under one root: a local directory or an S3 bucket prefix.

The database stores keys relative to the root (``image_assets.path``), so the root can move
(another disk, another machine's mount, a bucket) by copying the files, without rewriting rows.
Both kinds of root go through obstore (``LocalStore``, ``S3Store``): one API, and writes a reader
never sees half done (a local put writes a temporary file and renames it; an S3 PUT becomes
visible whole or not at all).

Every failure of the store itself is a ``StorageError`` with a one-line message:
``StorageUnavailable`` (cannot reach it, a server error: worth retrying), ``StorageRefused``
(credentials, permissions, a missing bucket: fix the configuration), ``AssetMissing`` (no such key).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from variant_pipeline.config import S3Options, Settings, parse_asset_root
from variant_pipeline.validation import InputError, check_tenant_id

_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
LIST_PAGE = 1000  # keys per list request (S3's own maximum)


class StorageError(RuntimeError):
    """The asset store failed; the message is one line and names the store."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or answered with a server error: a retry may succeed."""


class StorageRefused(StorageError):
    """The store refused the request: credentials, permissions or a missing bucket."""


class AssetMissing(StorageError):
    """No file under that key."""


@dataclass(frozen=True)
class StoredImage:
    relative_path: str  # POSIX, relative to the store root: what image_assets.path holds
    uri: str  # where it is: an absolute path, or s3://bucket/prefix/key
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    size: int
    modified: datetime


class AssetStore:
    """Read, write, list and delete asset files under one root (see the module docstring)."""

    def __init__(self, root: str | Path, s3: S3Options | None = None) -> None:
        self.root = parse_asset_root(str(root))
        self.s3 = s3 or S3Options()
        self._store: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AssetStore:
        return _store_for(settings.asset_root, settings.s3)

    @property
    def uri(self) -> str:
        return self.root.uri

    @property
    def is_local(self) -> bool:
        return self.root.kind == "local"

    def _backend(self) -> Any:
        if self._store is None:
            self._store = self._open()
        return self._store

    def _open(self) -> Any:
        from obstore.store import LocalStore, S3Store

        if self.root.directory is not None:
            return LocalStore(self.root.directory, mkdir=True)
        o = self.s3
        config: dict[str, Any] = {}
        if o.endpoint_url:
            config["endpoint"] = o.endpoint_url
        if o.access_key_id:
            config["access_key_id"] = o.access_key_id
        if o.secret_access_key:
            config["secret_access_key"] = o.secret_access_key
        if o.region:
            config["region"] = o.region
        client: dict[str, Any] = {
            "timeout": timedelta(seconds=o.request_timeout_s),
            "connect_timeout": timedelta(seconds=o.connect_timeout_s),
        }
        if (o.endpoint_url or "").startswith("http://"):
            client["allow_http"] = True  # a plain-HTTP endpoint the user named (a local server)
        retry = {"max_retries": 5, "retry_timeout": timedelta(seconds=o.retry_timeout_s),
                 "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=3)}}
        try:
            return S3Store(self.root.bucket, prefix=self.root.prefix or None, config=config,
                           client_options=client, retry_config=retry)
        except Exception as exc:  # a configuration obstore cannot use (a malformed endpoint, ...)
            raise StorageRefused(f"asset store {self.uri}: cannot be configured: {_first_line(exc)}") from None

    # --- keys ---------------------------------------------------------------------------------

    def _key(self, relative_path: str) -> str:
        rel = PurePosixPath(relative_path)
        if rel.is_absolute() or ".." in rel.parts or "." in str(relative_path).split("/") or not rel.parts:
            raise InputError(f"invalid asset path {relative_path!r}: must be relative to the asset root")
        return rel.as_posix()

    def uri_for(self, relative_path: str) -> str:
        """Where a stored file is, for people and for ``results --json``."""
        key = self._key(relative_path)
        if self.root.directory is not None:
            return str(self.root.directory / key)
        return f"{self.uri}/{key}"

    def path_for(self, relative_path: str) -> Path:
        """The file of a key under a local root, for tools and tests that work on the disk itself;
        refuses keys that would leave the root (through ``..`` or a symbolic link)."""
        if self.root.directory is None:
            raise StorageRefused(f"asset store {self.uri} is not a local directory")
        path = (self.root.directory / self._key(relative_path)).resolve()
        if not path.is_relative_to(self.root.directory):
            raise InputError(f"invalid asset path {relative_path!r}: leaves the asset root")
        return path

    def relative_of(self, uri: str) -> str | None:
        """The key of one of this store's URIs (``uri_for``'s inverse), or None if it is not ours."""
        base = self.uri.rstrip("/") + "/"
        return uri[len(base):] if uri.startswith(base) else None

    # --- reading and writing ------------------------------------------------------------------

    def save_image(self, tenant_id: str, kind: str, image: Image.Image, fmt: str = "PNG") -> StoredImage:
        """Write ``image`` to ``tenants/{tenant}/{kind}/YYYY/MM/DD/{uuid}.{ext}`` under the root."""
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
        ).as_posix()
        self.put_bytes(relative, data)
        return StoredImage(relative_path=relative, uri=self.uri_for(relative), width=image.width,
                           height=image.height, sha256=hashlib.sha256(data).hexdigest())

    def put_bytes(self, relative_path: str, data: bytes) -> None:
        """Store ``data`` under the key, whole or not at all."""
        import obstore

        key = self._key(relative_path)
        self._call("write", key, lambda: obstore.put(self._backend(), key, data))

    def read_bytes(self, relative_path: str) -> bytes:
        import obstore

        key = self._key(relative_path)
        if self.root.directory is not None:
            self.path_for(key)  # a symbolic link placed under the root must not lead out of it
        return self._call("read", key, lambda: bytes(obstore.get(self._backend(), key).bytes()))

    def open_image(self, relative_path: str) -> Image.Image:
        """Load a stored image fully into memory."""
        with Image.open(io.BytesIO(self.read_bytes(relative_path))) as img:
            img.load()
            return img.copy()

    def size_of(self, relative_path: str) -> int | None:
        """The stored file's size in bytes, or None when there is no such file."""
        import obstore

        key = self._key(relative_path)
        try:
            return int(self._call("look up", key, lambda: obstore.head(self._backend(), key))["size"])
        except AssetMissing:
            return None

    def delete(self, relative_path: str) -> None:
        """Remove a stored file; a file already gone is not an error."""
        import obstore

        key = self._key(relative_path)
        with contextlib.suppress(AssetMissing):
            self._call("delete", key, lambda: obstore.delete(self._backend(), key))

    def files(self, under: str = "tenants") -> Iterator[StoredFile]:
        """Every file under ``under`` (a key prefix), listed a page at a time."""
        import obstore

        prefix = self._key(under).rstrip("/") + "/"
        pages = self._call("list", prefix, lambda: iter(obstore.list(self._backend(), prefix, chunk_size=LIST_PAGE)))
        while True:
            page = self._call("list", prefix, lambda: next(pages, None))
            if page is None:
                return
            for meta in page:
                yield StoredFile(str(meta["path"]), int(meta["size"]), meta["last_modified"])

    def check(self) -> None:
        """Raise a ``StorageError`` unless the root can be listed (reachable, allowed, existing)."""
        import obstore

        def probe() -> None:
            stream = obstore.list(self._backend(), "tenants/", chunk_size=1)
            next(iter(stream), None)

        self._call("list", "tenants/", probe)

    # --- errors -------------------------------------------------------------------------------

    def _call(self, action: str, key: str, operation: Any) -> Any:
        try:
            return operation()
        except InputError:
            raise
        except Exception as exc:
            raise self._classify(action, key, exc) from None

    def _classify(self, action: str, key: str, exc: Exception) -> StorageError:
        from obstore import exceptions as oe

        where = f"asset store {self.uri}" + (f" ({self.s3.endpoint_url})" if self.s3.endpoint_url else "")
        text = str(exc)
        code = re.search(r"<Code>([A-Za-z]+)</Code>", text)
        status = re.search(r"status code: (\d{3})", text)
        if code and code.group(1) == "NoSuchBucket":
            return StorageRefused(f"{where}: bucket {self.root.bucket!r} does not exist")
        if isinstance(exc, FileNotFoundError | oe.NotFoundError):
            return AssetMissing(f"asset file {self.uri_for(key)} not found")
        if (isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError | PermissionError)
                or (status and status.group(1) in ("401", "403"))):
            reason = code.group(1) if code else type(exc).__name__
            return StorageRefused(f"{where}: the store refused to {action} {key!r} ({reason}): "
                                  "check the access key, the secret key and the bucket's permissions")
        if status and status.group(1).startswith("4"):
            reason = code.group(1) if code else f"HTTP {status.group(1)}"
            return StorageRefused(f"{where}: cannot {action} {key!r}: {reason}")
        if status:
            reason = code.group(1) if code else ""
            return StorageUnavailable(f"{where}: server error on {action} {key!r}: HTTP {status.group(1)} {reason}".rstrip())
        if isinstance(exc, oe.GenericError) and ("error sending request" in text or "timed out" in text.lower()
                                                 or "Connect" in text or "connection" in text.lower()):
            return StorageUnavailable(f"cannot reach {where} to {action} {key!r}: the connection failed")
        return StorageUnavailable(f"{where}: cannot {action} {key!r}: {type(exc).__name__}: {_first_line(exc)}")


@functools.lru_cache(maxsize=8)
def _store_for(root: str, s3: S3Options) -> AssetStore:
    """One store (and one connection pool) per root and options in a process."""
    return AssetStore(root, s3)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__

"""Asset storage: per-tenant paths relative to one root, safe against path tricks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from variant_pipeline.data.storage import AssetStore
from variant_pipeline.validation import InputError


def test_save_and_open_round_trip(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "assets")
    image = Image.new("RGB", (32, 24), (10, 200, 30))
    stored = store.save_image("acme", "product", image)
    assert stored.relative_path.startswith("tenants/acme/product/") and stored.relative_path.endswith(".png")
    assert stored.path == (tmp_path / "assets" / stored.relative_path).resolve()
    assert (stored.width, stored.height) == (32, 24)
    assert stored.sha256 == hashlib.sha256(stored.path.read_bytes()).hexdigest()
    loaded = store.open_image(stored.relative_path)
    assert loaded.size == (32, 24) and loaded.getpixel((0, 0)) == (10, 200, 30)
    assert store.path_for(stored.relative_path) == stored.path
    assert not list(stored.path.parent.glob("*.partial"))


def test_each_save_gets_its_own_file(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    image = Image.new("L", (16, 16))
    assert store.save_image("t1", "mask", image).path != store.save_image("t1", "mask", image).path


def test_jpeg_of_an_rgba_image(tmp_path: Path) -> None:
    stored = AssetStore(tmp_path).save_image("t1", "final", Image.new("RGBA", (16, 16)), fmt="jpeg")
    assert stored.relative_path.endswith(".jpg")
    with Image.open(stored.path) as img:
        assert img.format == "JPEG"


@pytest.mark.parametrize("tenant", ["../evil", "a/b", "", ".hidden", "x" * 65])
def test_unsafe_tenant_ids_are_refused(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(InputError, match="invalid tenant id"):
        AssetStore(tmp_path).save_image(tenant, "product", Image.new("RGB", (16, 16)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["../x", "A B", ""])
def test_unsafe_kinds_are_refused(tmp_path: Path, kind: str) -> None:
    with pytest.raises(InputError, match="invalid asset kind"):
        AssetStore(tmp_path).save_image("t1", kind, Image.new("RGB", (16, 16)))


@pytest.mark.parametrize("relative", ["/etc/passwd", "../outside.png", "tenants/../../x", ""])
def test_paths_cannot_leave_the_root(tmp_path: Path, relative: str) -> None:
    with pytest.raises(InputError, match="invalid asset path"):
        AssetStore(tmp_path / "assets").path_for(relative)


def test_delete_removes_the_file(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    stored = store.save_image("t1", "product", Image.new("RGB", (16, 16)))
    store.delete(stored.relative_path)
    assert not stored.path.exists()

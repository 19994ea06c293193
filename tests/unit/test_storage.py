"""Asset storage on a local root: per-tenant keys relative to one root, safe against path tricks.
(The same store against a real S3 server: tests/integration/test_object_store.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from variant_pipeline.config import SettingsError, parse_asset_root
from variant_pipeline.data.storage import AssetMissing, AssetStore
from variant_pipeline.validation import InputError


def test_save_and_open_round_trip(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "assets")
    image = Image.new("RGB", (32, 24), (10, 200, 30))
    stored = store.save_image("acme", "product", image)
    assert stored.relative_path.startswith("tenants/acme/product/") and stored.relative_path.endswith(".png")
    assert stored.uri == str((tmp_path / "assets" / stored.relative_path).resolve())
    assert (stored.width, stored.height) == (32, 24)
    assert stored.sha256 == hashlib.sha256(Path(stored.uri).read_bytes()).hexdigest()
    loaded = store.open_image(stored.relative_path)
    assert loaded.size == (32, 24) and loaded.getpixel((0, 0)) == (10, 200, 30)
    assert str(store.path_for(stored.relative_path)) == stored.uri
    assert list(Path(stored.uri).parent.iterdir()) == [Path(stored.uri)]  # no temporary file left


def test_each_save_gets_its_own_file(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    image = Image.new("L", (16, 16))
    assert store.save_image("t1", "mask", image).uri != store.save_image("t1", "mask", image).uri


def test_jpeg_of_an_rgba_image(tmp_path: Path) -> None:
    stored = AssetStore(tmp_path).save_image("t1", "final", Image.new("RGBA", (16, 16)), fmt="jpeg")
    assert stored.relative_path.endswith(".jpg")
    with Image.open(stored.uri) as img:
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
    assert not Path(stored.uri).exists()
    store.delete(stored.relative_path)  # already gone: not an error
    assert store.size_of(stored.relative_path) is None
    with pytest.raises(AssetMissing, match="not found"):
        store.read_bytes(stored.relative_path)


def test_files_lists_every_file_with_its_size_and_time(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    saved = [store.save_image("t1", kind, Image.new("RGB", (16, 16))) for kind in ("product", "mask", "mask")]
    (tmp_path / "elsewhere.txt").write_text("not under tenants/")
    listed = {f.relative_path: f for f in store.files("tenants")}
    assert set(listed) == {s.relative_path for s in saved}
    for s in saved:
        assert listed[s.relative_path].size == store.size_of(s.relative_path) == Path(s.uri).stat().st_size
        assert listed[s.relative_path].modified.timestamp() == pytest.approx(Path(s.uri).stat().st_mtime, abs=1)
    assert store.relative_of(saved[0].uri) == saved[0].relative_path
    assert store.relative_of("/somewhere/else.png") is None


@pytest.mark.parametrize(("root", "kind", "uri"), [
    ("s3://vp-assets", "s3", "s3://vp-assets"),
    ("s3://vp-assets/prod/eu/", "s3", "s3://vp-assets/prod/eu"),
    ("relative/dir", "local", None),
])
def test_asset_roots_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str, kind: str, uri: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    parsed = parse_asset_root(root)
    assert parsed.kind == kind
    assert parsed.uri == (uri or str(tmp_path / root))


@pytest.mark.parametrize(("root", "message"), [
    ("s3://", "not a valid bucket name"),
    ("s3://Bad_Bucket/x", "not a valid bucket name"),
    ("s3://ab/x", "not a valid bucket name"),
    ("s3://vp-assets/a/../b", "may not contain"),
    ("gs://vp-assets", "only a local directory or s3://"),
    ("  ", "is empty"),
])
def test_malformed_asset_roots_are_refused(root: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_asset_root(root)


def test_a_symbolic_link_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16)).save(secret)
    root = tmp_path / "assets"
    (root / "tenants" / "t1").mkdir(parents=True)
    (root / "tenants" / "t1" / "link.png").symlink_to(secret)
    with pytest.raises(InputError, match="leaves the asset root"):
        AssetStore(root).read_bytes("tenants/t1/link.png")

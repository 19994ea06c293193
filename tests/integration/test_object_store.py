"""Asset files in a bucket of a real S3 server (SeaweedFS on 127.0.0.1, tests/fixtures/s3.py).

The store itself (keys, paging, a write cut off by the server dying), the stages and everything
that reads their images with ``VP_ASSET_ROOT=s3://...`` (results, the HTML gallery, prune and its
orphan scan), a stage whose S3 server dies under it, and each bad configuration's one line.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.fixtures.db import count_rows
from tests.fixtures.pipeline import submit_sample
from tests.fixtures.s3 import SeaweedServer
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.assets.stage_assets import JOB_ASSETS, VARIANT_ASSETS
from variant_pipeline.cli import main
from variant_pipeline.config import S3Options, load_settings
from variant_pipeline.data import storage
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.data.partition_state import attempts_of
from variant_pipeline.data.storage import AssetMissing, AssetStore, StorageRefused, StorageUnavailable
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.retention import DagsterOrchestrator
from variant_pipeline.services import SAMPLE_PRODUCT
from variant_pipeline.state.retention import prune


def _keys(store: AssetStore) -> set[str]:
    return {f.relative_path for f in store.files("tenants")}


def test_the_store_reads_writes_lists_a_page_at_a_time_and_deletes_in_a_bucket(
        s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AssetStore.from_settings(load_settings())
    assert not store.is_local and store.uri == s3_env["VP_ASSET_ROOT"]
    saved = [store.save_image("acme", "mask", Image.new("RGB", (20, 10), (i * 40, 0, 0))) for i in range(5)]
    assert all(s.uri == f"{store.uri}/{s.relative_path}" for s in saved)
    assert store.open_image(saved[3].relative_path).getpixel((0, 0)) == (120, 0, 0)
    monkeypatch.setattr(storage, "LIST_PAGE", 2)  # five keys: three pages
    assert _keys(store) == {s.relative_path for s in saved}
    assert store.size_of(saved[0].relative_path) == len(store.read_bytes(saved[0].relative_path))
    assert store.relative_of(saved[1].uri) == saved[1].relative_path
    store.delete(saved[0].relative_path)
    store.delete(saved[0].relative_path)  # gone already: not an error
    assert store.size_of(saved[0].relative_path) is None
    with pytest.raises(AssetMissing, match="not found"):
        store.read_bytes(saved[0].relative_path)
    # The keys live under the root's prefix: another prefix of the same bucket sees none of them.
    other = AssetStore(s3_env["VP_ASSET_ROOT"] + "-other", load_settings().s3)
    assert _keys(other) == set()


def test_a_write_cut_off_by_the_server_dying_leaves_no_half_object(s3_server: SeaweedServer, s3_env,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A 48 MB object is being written when the server is killed: the key is absent afterwards
    (never a prefix of the bytes), and the same write succeeds once the server is back."""
    monkeypatch.setenv("VP_S3_RETRY_TIMEOUT_S", "1")
    store = AssetStore.from_settings(load_settings())
    data = bytes(range(256)) * (48 * 4096)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            store.put_bytes("tenants/acme/big/blob.bin", data)
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            failure.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.15)
    s3_server.kill()
    writer.join(timeout=120)
    assert not writer.is_alive()
    try:
        assert failure and isinstance(failure[0], StorageUnavailable), failure
        assert "\n" not in str(failure[0])
    finally:
        s3_server.start()
    store = AssetStore(s3_env["VP_ASSET_ROOT"], load_settings().s3)  # a new client: the old pool saw the server die
    assert store.size_of("tenants/acme/big/blob.bin") is None
    store.put_bytes("tenants/acme/big/blob.bin", data)
    assert store.read_bytes("tenants/acme/big/blob.bin") == data


OVERLAY_ON = ["overlay", "vlm_judge", "ocr_eval", "readability_eval", "iou_eval"]


def _named(engine, job_id) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT path FROM image_assets WHERE job_id = :j"),
                                {"j": str(job_id)}).scalars())


def _materialize(instance, assets, key: str, selection: list[str] | None = None):
    return dg.materialize(assets, partition_key=key, instance=instance, resources=default_resources(),
                          selection=selection, raise_on_error=False)


def test_the_stages_results_gallery_and_prune_work_on_a_bucket(pipeline_env, dagster_instance, s3_env,
                                                               capsys, tmp_path: Path) -> None:
    engine = get_engine(pipeline_env.app_url)
    store = AssetStore.from_settings(load_settings())
    job = submit_sample(pipeline_env.app_url, variants=2)
    keys = [str(v) for v in job.variant_ids]
    dagster_instance.add_dynamic_partitions(variant_partitions.name, keys)
    dagster_instance.add_dynamic_partitions(job_partitions.name, [str(job.job_id)])
    for key in keys:
        assert _materialize(dagster_instance, VARIANT_ASSETS, key).success
    first_run = _keys(store)
    # A hand re-materialization from overlay on reads its inputs from the bucket and writes there.
    assert _materialize(dagster_instance, VARIANT_ASSETS, keys[0], selection=OVERLAY_ON).success
    replaced = first_run - _named(engine, job.job_id)
    assert len(replaced) == 2 and len(_keys(store) - first_run) == 2  # overlaid image and glyph mask, anew
    assert _materialize(dagster_instance, JOB_ASSETS, str(job.job_id)).success
    status = get_job_status(engine, job.job_id)
    assert (status.stage, status.status) == ("instagram_feed_gen", "done")

    named = _named(engine, job.job_id)
    assert len(named) == 1 + 2 * 5 and named == _keys(store) - replaced  # the photo, five images per variant
    assert not (pipeline_env.home / "assets").exists()  # nothing went to the local disk

    # The UI's thumbnails and the job's gallery were drawn from the bucket's images.
    [feed] = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("instagram_feed_gen")), limit=1).records
    metadata = feed.asset_materialization.metadata
    gallery = next(v.value for k, v in metadata.items() if "gallery" in k)
    assert gallery.count("data:image/jpeg;base64,") == 2 and "unreadable" not in gallery
    [overlay] = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("overlay"), asset_partitions=[keys[0]]), limit=1).records
    links = [v.value for k, v in overlay.asset_materialization.metadata.items() if k.startswith("file:")]
    assert links and all(link.startswith(s3_env["VP_ASSET_ROOT"] + "/tenants/") for link in links)

    # results: URIs in the JSON, the images themselves in the HTML page.
    html = tmp_path / "gallery.html"
    assert main(["results", str(job.job_id), "--json", "--html", str(html)]) == 0
    answer = json.loads(capsys.readouterr().out)
    uris = [v["image_path"] for v in answer["variants"]]
    assert all(u.startswith(s3_env["VP_ASSET_ROOT"] + "/tenants/demo-cafe/overlaid/") for u in uris), uris
    assert {store.relative_of(u) for u in uris} <= named
    page = html.read_text()
    assert page.count('src="data:image/jpeg;base64,') == 2 and "unreadable" not in page

    # prune: the job's files and the orphans (the replaced overlay's two, one more) go from the
    # bucket; an orphan younger than the age guard stays.
    orphan = store.save_image("demo-cafe", "generated", Image.new("RGB", (16, 16)))
    time.sleep(2.2)
    young = store.save_image("demo-cafe", "generated", Image.new("RGB", (16, 16)))
    orchestrator = DagsterOrchestrator(dagster_instance)
    dry = prune(engine, orchestrator, store, timedelta(seconds=1), dry_run=True, orphan_min_age_s=2)
    assert set(dry.orphans) == replaced | {orphan.relative_path} and young.relative_path in _keys(store)
    report = prune(engine, orchestrator, store, timedelta(seconds=1), orphan_min_age_s=2)
    assert set(report.orphans) == replaced | {orphan.relative_path}
    assert [(j.job_id, j.files) for j in report.jobs] == [(str(job.job_id), len(named))]
    assert _keys(store) == {young.relative_path}


@pytest.mark.timeout(300)
def test_a_stage_whose_s3_server_dies_fails_as_transient_and_its_retry_finishes(
        s3_server: SeaweedServer, pipeline_env, dagster_instance, s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is killed while img_gen's first attempt is in flight (its drill holds it for a
    few seconds): the attempt fails with the store's one-line reason and a retry is scheduled; with
    the server back, the retry generates the image and stores it whole."""
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])
    monkeypatch.setenv("VP_FAULTS", "img_gen:sleep=4:attempt=1")
    monkeypatch.setenv("VP_S3_RETRY_TIMEOUT_S", "1")
    monkeypatch.setenv("VP_RETRY_BACKOFF_S", "0")

    def kill_when_running() -> None:
        deadline = time.monotonic() + 120
        while not any(a["outcome"] == "running" for a in attempts_of(engine, key)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        s3_server.kill()

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    try:
        first = _materialize(dagster_instance, VARIANT_ASSETS, key, selection=["img_gen"])
    finally:
        killer.join()
        s3_server.start()
    assert not first.success
    [attempt] = attempts_of(engine, key)
    assert attempt["outcome"] == "failed" and "cannot reach asset store" in attempt["error"], attempt
    variant = get_job_status(engine, job.job_id).variants[0]
    assert (variant.stage, variant.status) == ("img_gen", "queued")  # a retry is scheduled, not a failure

    monkeypatch.delenv("VP_FAULTS")
    monkeypatch.delenv("VP_S3_RETRY_TIMEOUT_S")  # the default: a request rides out a server still warming up
    assert _materialize(dagster_instance, VARIANT_ASSETS, key, selection=["img_gen"]).success
    assert [a["outcome"] for a in attempts_of(engine, key)] == ["failed", "done"]
    store = AssetStore.from_settings(load_settings())
    with engine.connect() as conn:
        path = conn.execute(sa.text("SELECT a.path FROM jobs_variants v JOIN image_assets a "
                                    "ON a.image_asset_id = v.img_asset_id WHERE v.job_variants_id = :v"),
                            {"v": key}).scalar_one()
    assert store.open_image(path).size == (load_settings().image_width, load_settings().image_height)


# --- bad configuration: one line, nothing written ---------------------------------------------


def _submit(capsys) -> tuple[int, str]:
    code = main(["submit", "--tenant", "acme", "--description", "커피", "--image", str(SAMPLE_PRODUCT)])
    return code, capsys.readouterr().err


@pytest.fixture
def tenant(db_env, capsys) -> str:
    assert main(["tenant", "add", "acme"]) == 0
    capsys.readouterr()
    return db_env


@pytest.mark.parametrize(("change", "expected"), [
    ({"VP_S3_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach asset store s3://"),
    ({"VP_S3_SECRET_ACCESS_KEY": "not-the-secret"}, "refused to list"),
    ({"VP_ASSET_ROOT": "s3://vp-no-such-bucket/vp"}, "bucket 'vp-no-such-bucket' does not exist"),
    ({"VP_ASSET_ROOT": "s3://No_Such/vp"}, "VP_ASSET_ROOT: asset root 's3://No_Such/vp'"),
    ({"VP_ASSET_ROOT": "ftp://host/x"}, "only a local directory or s3://bucket[/prefix]"),
])
def test_bad_object_store_configuration_is_one_line_at_submit_and_writes_nothing(
        tenant, s3_env, engine, capsys, monkeypatch: pytest.MonkeyPatch, change: dict[str, str], expected: str) -> None:
    monkeypatch.setenv("VP_S3_RETRY_TIMEOUT_S", "1")
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    code, err = _submit(capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert time.monotonic() - started < 30
    assert count_rows(engine, "jobs") == 0 and count_rows(engine, "image_assets") == 0
    good = AssetStore(s3_env["VP_ASSET_ROOT"], S3Options(
        endpoint_url=s3_env["VP_S3_ENDPOINT_URL"], access_key_id=s3_env["VP_S3_ACCESS_KEY_ID"],
        secret_access_key=s3_env["VP_S3_SECRET_ACCESS_KEY"], region="us-east-1"))
    assert _keys(good) == set()  # no photo reached the bucket either


def test_a_write_with_wrong_credentials_is_refused_in_one_line(s3_env) -> None:
    """What a stage meets with a wrong secret: ``StorageRefused`` (the operator's to fix), one line
    that says what to check."""
    s3 = load_settings().s3
    wrong = AssetStore(s3_env["VP_ASSET_ROOT"], type(s3)(**{**s3.__dict__, "secret_access_key": "nope"}))
    with pytest.raises(StorageRefused, match="check the access key") as refused:
        wrong.put_bytes("tenants/acme/x.png", b"x")
    assert "\n" not in str(refused.value)


def test_prune_with_the_store_down_changes_nothing_and_files_left_by_a_failed_delete_go_next_time(
        s3_server: SeaweedServer, pipeline_env, dagster_instance, s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before its commit, prune needs the store (it sizes the job's files): down, the prune fails
    in one line and the job keeps its partitions. After the commit a failed delete leaves the job
    pruned with its files counted as left, and the next prune's orphan scan removes them (a row of
    a pruned job written before its prune no longer keeps a file)."""
    monkeypatch.setenv("VP_S3_RETRY_TIMEOUT_S", "1")
    engine = get_engine(pipeline_env.app_url)
    store = AssetStore.from_settings(load_settings())
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])
    assert _materialize(dagster_instance, VARIANT_ASSETS, key, selection=["img_gen"]).success
    with engine.begin() as conn:  # finished long ago (as a failed job), so the age rule takes it
        conn.execute(sa.text("UPDATE jobs_variants SET status = 'failed', finished_at = now() - interval '1 day' "
                             "WHERE job_id = :j"), {"j": str(job.job_id)})
        conn.execute(sa.text("UPDATE jobs SET status = 'failed', finished_at = now() - interval '1 day' "
                             "WHERE job_id = :j"), {"j": str(job.job_id)})
    files = _named(engine, job.job_id)
    assert len(files) == 2  # the photo and the generated image
    orchestrator = DagsterOrchestrator(dagster_instance)

    s3_server.kill()
    try:
        with pytest.raises(StorageUnavailable, match="cannot reach asset store") as down:
            prune(engine, orchestrator, AssetStore(s3_env["VP_ASSET_ROOT"], load_settings().s3), timedelta(hours=1))
        assert "\n" not in str(down.value)
    finally:
        s3_server.start()
    assert key in dagster_instance.get_dynamic_partitions(variant_partitions.name)
    assert get_job_status(engine, job.job_id).pruned_at is None

    store = AssetStore(s3_env["VP_ASSET_ROOT"], load_settings().s3)
    report = prune(engine, orchestrator, store, timedelta(hours=1), orphan_min_age_s=0)
    assert [j.job_id for j in report.jobs] == [str(job.job_id)] and report.files_left == 0
    assert _keys(store) == set()
    # As if one delete had failed: the file is back, named only by the pruned job's row.
    kept = sorted(files)[0]
    store.put_bytes(kept, b"left behind")
    time.sleep(1.1)
    again = prune(engine, orchestrator, store, timedelta(seconds=1), orphan_min_age_s=0)
    assert again.orphans == [kept] and _keys(store) == set()


def test_a_delete_the_store_fails_is_counted_as_left_not_raised(s3_env) -> None:
    from variant_pipeline.state.retention import PruneReport, _delete_files

    s3 = load_settings().s3
    dead = AssetStore(s3_env["VP_ASSET_ROOT"], type(s3)(**{**s3.__dict__, "endpoint_url": "http://127.0.0.1:9",
                                                            "retry_timeout_s": 0.5}))
    report = PruneReport(cutoff=None, dry_run=False, rows=False)
    _delete_files(dead, ["tenants/acme/a.png", "tenants/acme/b.png"], report)
    assert report.files_left == 2 and "cannot reach asset store" in report.store_errors[0]
    assert any("2 files of pruned jobs not deleted" in line for line in report.lines())

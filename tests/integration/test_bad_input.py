"""Bad input through the whole pipeline: rows another system writes straight into the tables reach
the stages without the CLI's checks. Each bad input must end in a clear, permanent ``failed`` with
its reason (or a correct result where the input is valid but unusual), the rest of the pipeline
must keep working, and no state change may go missing from the outbox.

The stages run as the daemon runs them, in this process: the outbox is read with the real
reader, the outbox sensor's own ``plan_tick`` decides what to run, and each run materializes its
stage assets on a PostgreSQL-backed Dagster instance with the tiny models.
"""

from __future__ import annotations

import io
import random
import struct
import unicodedata
import uuid
import zlib
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from tests.fixtures.db import create_job
from tests.imaging import gradient, needs_emoji
from variant_pipeline import cli
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.assets.stage_assets import JOB_ASSETS, VARIANT_ASSETS
from variant_pipeline.config import load_settings
from variant_pipeline.data import partition_state
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import add_tenant
from variant_pipeline.data.outbox import read_events_after
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.outbox import plan_tick
from variant_pipeline.validation import MAX_AD_COPY_KOR_CHARS, MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from variant_pipeline.work.fonts import missing_glyphs

TENANT = "shop-x"
OUTPUT_TABLES = ("image_assets", "detection_runs", "detections", "planner_proposals", "overlay_layouts",
                 "vlm_traces", "evaluations")
EMOJI_COPY = "오늘만 50% 할인 ☕🔥 Café Crème"


# --- Bad files ----------------------------------------------------------------------------------


def _png_1bit(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of any size, built row by row: 20000x20000 is 49 kB on disk and
    never exists decoded (400 Mpx) in this process."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    rows = (b"\x00" * (1 + (width + 7) // 8)) * 1000
    idat = b"".join(comp.compress(rows) for _ in range(height // 1000))
    idat += comp.compress(b"\x00" * (1 + (width + 7) // 8) * (height % 1000)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    gradient(200).save(buf, format="JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2]  # a valid header, half the scan data


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] "
       b"/Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")

# name -> (file name, bytes, the reason the CLI and the pipeline both give)
BAD_PHOTOS: dict[str, tuple[str, bytes, str]] = {
    "truncated-jpeg": ("photo.jpg", _truncated_jpeg(), "not a readable image"),
    "random-bytes": ("photo.png", random.Random(5).randbytes(4096), "not a readable image"),
    "text-file": ("photo.jpg", "얼큰한 부대찌개 2인분, not a photo\n".encode(), "not a readable image"),
    "pdf": ("photo.pdf", PDF, "not a readable image"),
    "1x1": ("dot.png", _png(Image.new("RGB", (1, 1), (200, 30, 30))),
            f"image is 1x1; each side must be at least {MIN_IMAGE_SIDE} px"),
    "20000x20000": ("huge.png", _png_1bit(20000, 20000),
                    f"image is 20000x20000; the limit is {MAX_IMAGE_SIDE} px a side"),
}


# --- Writing rows as another system would --------------------------------------------------------


def _store() -> AssetStore:
    return AssetStore.from_settings(load_settings())


def _put_file(relative: str, data: bytes) -> Path:
    path = _store().path_for(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _insert_asset(conn: sa.Connection, relative: str, image_type: str) -> str:
    return str(conn.execute(
        sa.text("INSERT INTO image_assets (tenant_id, image_type, path) VALUES (:t, :type, :p) "
                "RETURNING image_asset_id"),
        {"t": TENANT, "type": image_type, "p": relative},
    ).scalar_one())


def _insert_job(engine: Engine, *, expected: int = 1, desc: str = "얼큰한 부대찌개",
                ad_copy_eng: str | None = None, ad_copy_kor: str | None = None,
                photo: str | None = None, variants: tuple[tuple[str, str | None], ...] = (("img_gen", None),),
                ) -> tuple[str, list[str], str | None]:
    """One INSERT transaction: the job, its inputs (``photo``: a relative path in the asset
    store), and variant rows at ``(stage, 'queued')`` with an optional image asset path each.
    Returns (job id, variant ids, product asset id)."""
    with engine.begin() as conn:
        job_id = str(conn.execute(
            sa.text("INSERT INTO jobs (tenant_id, expected_variants) VALUES (:t, :n) RETURNING job_id"),
            {"t": TENANT, "n": expected},
        ).scalar_one())
        photo_id = _insert_asset(conn, photo, "product") if photo else None
        conn.execute(
            sa.text("INSERT INTO job_inputs (job_id, desc_kor, ad_copy_eng, ad_copy_kor, product_image_asset_id) "
                    "VALUES (:j, :d, :ae, :ak, :a)"),
            {"j": job_id, "d": desc, "ae": ad_copy_eng, "ak": ad_copy_kor, "a": photo_id},
        )
        variant_ids = []
        for order, (stage, image) in enumerate(variants, start=1):
            image_id = _insert_asset(conn, image, "generated") if image else None
            variant_ids.append(str(conn.execute(
                sa.text("INSERT INTO jobs_variants (job_id, creation_order, current_step, status, img_asset_id) "
                        "VALUES (:j, :o, :s, 'queued', :img) RETURNING job_variants_id"),
                {"j": job_id, "o": order, "s": stage, "img": image_id},
            ).scalar_one()))
    return job_id, variant_ids, photo_id


# --- Running what the outbox asks for ------------------------------------------------------------


def _drain(instance: dg.DagsterInstance, engine: Engine) -> list[dg.ExecuteInProcessResult]:
    """The daemon's loop, in this process: read the outbox, add partitions, run every run the
    outbox sensor would request, until the events ask for nothing more."""
    results: list[dg.ExecuteInProcessResult] = []
    cursor = None
    while True:
        events, cursor = read_events_after(engine, cursor)
        plan = plan_tick(events, instance.get_dynamic_partitions(variant_partitions.name),
                         instance.get_dynamic_partitions(job_partitions.name))
        instance.add_dynamic_partitions(variant_partitions.name, plan.new_variant_keys)
        instance.add_dynamic_partitions(job_partitions.name, plan.new_job_keys)
        if not plan.runs:
            return results
        for run in plan.runs:
            assets = VARIANT_ASSETS if run.level == "variant" else JOB_ASSETS
            results.append(dg.materialize(assets, partition_key=run.partition_key, instance=instance,
                                          resources=default_resources(), selection=run.asset_selection,
                                          raise_on_error=False))


# --- What must hold after a drain ----------------------------------------------------------------


def _row(engine: Engine, table: str, key: str) -> dict:
    column = "job_variants_id" if table == "jobs_variants" else "job_id"
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(f"SELECT current_step, status, error FROM {table} WHERE {column} = :k"),
                                 {"k": key}).mappings().one())


def _assert_outbox_complete(engine: Engine) -> None:
    """Every row's state changes are in the outbox as one unbroken chain from its INSERT to its
    current state: no change was lost (or recorded twice)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT 'variant' AS kind, job_variants_id AS id, current_step, status, error FROM jobs_variants "
            "UNION ALL SELECT 'job', job_id, current_step, status, error FROM jobs")).mappings().all()
        for row in rows:
            column = "job_variants_id" if row["kind"] == "variant" else "job_id"
            events = conn.execute(sa.text(
                f"SELECT old_step, old_status, new_step, new_status, error FROM pipeline_events "
                f"WHERE kind = :kind AND {column} = :id ORDER BY id"), {"kind": row["kind"], "id": row["id"]},
            ).mappings().all()
            assert events, f"{row['kind']} {row['id']} has no events"
            assert events[0]["old_step"] is None  # the INSERT
            for before, after in zip(events, events[1:], strict=False):
                assert (after["old_step"], after["old_status"]) == (before["new_step"], before["new_status"])
            last = events[-1]
            assert (last["new_step"], last["new_status"], last["error"]) == (
                row["current_step"], row["status"], row["error"])


def _output_rows(engine: Engine, variant_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t} WHERE job_variants_id = :v"),
                                {"v": variant_id}).scalar_one() for t in OUTPUT_TABLES}


def _assert_failed_at_once(engine: Engine, variant_id: str, stage: str, *reasons: str) -> str:
    """The variant failed at ``stage`` with every ``reasons`` fragment in its error, in one
    attempt (a permanent failure, never retried), and wrote no stage output. Returns the error."""
    row = _row(engine, "jobs_variants", variant_id)
    assert (row["current_step"], row["status"]) == (stage, "failed"), row
    assert row["error"].startswith("StageInputError: "), row["error"]
    for reason in reasons:
        assert reason in row["error"], (reason, row["error"])
    attempts = partition_state.attempts_of(engine, variant_id)
    assert [(a["stage"], a["outcome"], a["will_retry"]) for a in attempts] == [(stage, "failed", False)]
    assert _output_rows(engine, variant_id) == dict.fromkeys(OUTPUT_TABLES, 0)
    return row["error"]


def _assert_finished(engine: Engine, variant_id: str) -> None:
    row = _row(engine, "jobs_variants", variant_id)
    assert (row["current_step"], row["status"]) == ("iou_eval", "done"), row
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT evaluation_type FROM evaluations WHERE job_variants_id = :v "
                                     "ORDER BY evaluation_type"), {"v": variant_id}).scalars().all()
    assert kinds == ["iou", "ocr", "readability"]


# --- Tests ---------------------------------------------------------------------------------------


def test_bad_product_photos_fail_img_gen_clearly_and_a_good_job_beside_them_finishes(
        pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    add_tenant(engine, TENANT)
    bad: dict[str, tuple[str, str, str, Path]] = {}
    for name, (file_name, data, reason) in BAD_PHOTOS.items():
        relative = f"{TENANT}/inbox/{name}/{file_name}"
        path = _put_file(relative, data)
        job_id, [variant_id], photo_id = _insert_job(engine, photo=relative)
        bad[name] = (job_id, variant_id, reason, path)
        assert photo_id is not None
    good = create_job(engine, tenant_id=TENANT, variants=1)

    _drain(dagster_instance, engine)

    for name, (job_id, variant_id, reason, path) in bad.items():
        error = _assert_failed_at_once(engine, variant_id, "img_gen", "product photo", reason, str(path))
        assert f"of job {job_id}" in error, (name, error)
        job = _row(engine, "jobs", job_id)
        assert (job["current_step"], job["status"], job["error"]) == ("iou_eval", "failed", "all 1 variants failed")
    _assert_finished(engine, str(good.variant_ids[0]))
    assert _row(engine, "jobs", str(good.job_id))["current_step"] == "instagram_feed_gen"
    assert _row(engine, "jobs", str(good.job_id))["status"] == "done"
    _assert_outbox_complete(engine)


@pytest.mark.parametrize("name", list(BAD_PHOTOS))
def test_the_cli_refuses_the_same_photos_for_the_same_reason(
        engine: Engine, db_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    file_name, data, reason = BAD_PHOTOS[name]
    path = tmp_path / file_name
    path.write_bytes(data)
    add_tenant(engine, TENANT)
    code = cli.main(["submit", "--tenant", TENANT, "--description", "부대찌개", "--image", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: ") and reason in err and str(path) in err, err
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 0


def test_korean_copy_over_the_limit_fails_the_first_stage_with_the_limit(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    add_tenant(engine, TENANT)
    long_copy = ("오늘만 특가 바삭한 치킨 " * 40)[:500]
    job_id, variant_ids, _ = _insert_job(engine, expected=2, ad_copy_kor=long_copy,
                                         variants=(("img_gen", None), ("img_gen", None)))

    _drain(dagster_instance, engine)

    for variant_id in variant_ids:
        _assert_failed_at_once(engine, variant_id, "img_gen", f"job {job_id}",
                               f"Korean ad copy is 500 characters long; the limit is {MAX_AD_COPY_KOR_CHARS}",
                               "job_inputs.ad_copy_kor")
    assert _row(engine, "jobs", job_id)["status"] == "failed"
    with engine.connect() as conn:  # nothing was generated for a job that cannot be drawn
        assert conn.execute(sa.text("SELECT count(*) FROM llm_traces")).scalar_one() == 0
    _assert_outbox_complete(engine)


def test_a_job_of_an_unknown_tenant_is_refused_by_the_database_and_the_cli(
        engine: Engine, db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(sa.exc.IntegrityError) as err, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO jobs (tenant_id) VALUES ('ghost-shop')"))
    assert "jobs_tenant_id_fkey" in str(err.value) and "(tenant_id)=(ghost-shop)" in str(err.value)

    code = cli.main(["submit", "--tenant", "ghost-shop", "--description", "부대찌개"])
    _, cli_err = capsys.readouterr()
    assert code == 2 and "unknown tenant 'ghost-shop'" in cli_err
    assert "variant-pipeline tenant add ghost-shop" in cli_err
    with engine.connect() as conn:
        for table in ("jobs", "pipeline_events"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0


def test_hand_inserted_variants_without_their_image_fail_and_their_sibling_finishes(
        pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    add_tenant(engine, TENANT)
    gone = f"{TENANT}/generated/{uuid.uuid4().hex}.png"  # an asset row whose file never arrived
    job_id, [good, no_asset, no_file], _ = _insert_job(
        engine, expected=3, ad_copy_kor="바삭한 치킨 한입",
        variants=(("img_gen", None), ("vlm_analyze", None), ("vlm_analyze", gone)))
    with engine.connect() as conn:
        gone_id = conn.execute(sa.text("SELECT img_asset_id FROM jobs_variants WHERE job_variants_id = :v"),
                               {"v": no_file}).scalar_one()

    _drain(dagster_instance, engine)

    _assert_failed_at_once(engine, no_asset, "vlm_analyze", f"variant {no_asset}",
                           "its image asset id is not set")
    _assert_failed_at_once(engine, no_file, "vlm_analyze", f"variant {no_file}", f"image asset {gone_id}",
                           "is missing: file", gone, "not found")
    _assert_finished(engine, good)
    # The rollup: done, because one variant succeeded; then the job stages ran for it.
    job = _row(engine, "jobs", job_id)
    assert (job["current_step"], job["status"]) == ("instagram_feed_gen", "done"), job
    _assert_outbox_complete(engine)


@needs_emoji
def test_emoji_and_mixed_scripts_are_drawn_with_fonts_that_have_them(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    add_tenant(engine, TENANT)
    desc = "오늘만 할인 ☕🔥 카페 크렘 (Café Crème)"
    copy_eng = "Today only ☕🔥 50% off Café Crème"
    job_id, [variant_id], _ = _insert_job(engine, desc=desc, ad_copy_eng=copy_eng, ad_copy_kor=EMOJI_COPY)

    _drain(dagster_instance, engine)

    _assert_finished(engine, variant_id)
    with engine.connect() as conn:
        layout = conn.execute(sa.text("SELECT layout FROM overlay_layouts WHERE job_variants_id = :v"),
                              {"v": variant_id}).scalar_one()
        paths = dict(conn.execute(sa.text(
            "SELECT image_type, path FROM image_assets WHERE job_variants_id = :v"), {"v": variant_id}).all())
        feed = conn.execute(sa.text("SELECT ad_copy_eng, product_description FROM instagram_feeds WHERE job_id = :j"),
                            {"j": job_id}).mappings().one()
    assert layout["text"] == EMOJI_COPY

    # Every drawn character comes from a font that has its glyph: the emoji from a colour font.
    by_fallback = {ch: f["path"] for f in layout["fallback_fonts"] for ch in f["chars"]}
    assert {"☕", "🔥"} <= set(by_fallback)
    assert any(f["color"] and "🔥" in f["chars"] for f in layout["fallback_fonts"])
    for ch in EMOJI_COPY:
        if ch.isspace() or unicodedata.category(ch) == "Cf":
            continue
        assert missing_glyphs(by_fallback.get(ch, layout["font_path"]), ch) == [], ch

    # The emoji are really on the image: in their run's box, in colours of their own.
    store = _store()
    base = np.asarray(store.open_image(paths["generated"]).convert("RGB")).astype(int)
    drawn = np.asarray(store.open_image(paths["overlaid"]).convert("RGB")).astype(int)
    [emoji_run] = [r for r in layout["fallback_runs"] if "🔥" in r["text"]]
    x1, y1, x2, y2 = emoji_run["box_px"]
    region_base, region = base[y1:y2, x1:x2], drawn[y1:y2, x1:x2]
    changed = (region != region_base).any(axis=2)
    assert changed.mean() > 0.3
    own_colour = changed & (np.abs(region - np.array(layout["text_color_rgb"])).sum(axis=2) > 60)
    assert own_colour.sum() > 0.2 * changed.sum()  # not a box in the text colour: the emoji's own colours

    # The evaluations measured it (OCR cannot read emoji; it still scores, it does not fail).
    with engine.connect() as conn:
        ocr = conn.execute(sa.text("SELECT metrics FROM evaluations WHERE job_variants_id = :v "
                                   "AND evaluation_type = 'ocr'"), {"v": variant_id}).scalar_one()
    # OCR is scored on what a text engine can read; the pictographs are recorded as left out.
    assert 0.0 <= ocr["ocr_accuracy"] <= 1.0
    assert (ocr["original_text"], ocr["not_compared"]) == ("오늘만 50% 할인 Café Crème", "☕🔥")
    # The job stages keep the emoji of the inputs as they are.
    assert (feed["ad_copy_eng"], feed["product_description"]) == (copy_eng, desc)
    assert _row(engine, "jobs", job_id)["status"] == "done"
    _assert_outbox_complete(engine)


def test_copy_no_installed_font_can_draw_fails_at_overlay_naming_the_character(
        pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    add_tenant(engine, TENANT)
    hieroglyph = "\U00013000"  # EGYPTIAN HIEROGLYPH A001: in no font this project installs
    job_id, [variant_id], _ = _insert_job(engine, ad_copy_kor=f"바삭한 치킨 {hieroglyph}")

    _drain(dagster_instance, engine)

    row = _row(engine, "jobs_variants", variant_id)
    assert (row["current_step"], row["status"]) == ("overlay", "failed"), row
    assert row["error"].startswith("StageInputError: ") and "U+13000" in row["error"], row["error"]
    attempts = partition_state.attempts_of(engine, variant_id)
    assert [(a["stage"], a["outcome"]) for a in attempts][-1] == ("overlay", "failed")
    assert all(not a["will_retry"] for a in attempts)
    assert _output_rows(engine, variant_id)["overlay_layouts"] == 0
    assert _row(engine, "jobs", job_id)["status"] == "failed"
    _assert_outbox_complete(engine)

"""The CLI: happy paths, and every bad input gives one error line, exit 2, and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from variant_pipeline import cli
from variant_pipeline.config import PROJECT_ROOT
from variant_pipeline.validation import (
    MAX_AD_COPY_EN_CHARS,
    MAX_AD_COPY_KOR_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_PROMPT_CHARS,
)

WRITTEN_TABLES = ("tenants", "jobs", "job_inputs", "jobs_variants", "image_assets", "pipeline_events")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in WRITTEN_TABLES}


def asset_files(home: Path) -> list[Path]:
    return [p for p in (home / "assets").rglob("*") if p.is_file()] if (home / "assets").exists() else []


@pytest.fixture
def home(db_env: str) -> Path:
    return Path(os.environ["VARIANT_PIPELINE_HOME"])


@pytest.fixture
def product_photo(tmp_path: Path) -> Path:
    path = tmp_path / "product.jpg"
    Image.new("RGB", (120, 80), (180, 40, 20)).save(path, format="JPEG")
    return path


@pytest.fixture
def tenant(engine: Engine, db_env: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert run(capsys, "tenant", "add", "acme", "--name", "Acme Foods")[0] == 0
    return "acme"


def test_tenant_add_is_idempotent(engine: Engine, db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tenant", "add", "acme")[1].strip() == "tenant acme added"
    assert run(capsys, "tenant", "add", "acme")[1].strip() == "tenant acme already exists"
    assert snapshot(engine)["tenants"] == 1


def test_submit_and_status(engine: Engine, tenant: str, home: Path, product_photo: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "submit", "--tenant", tenant, "--description", "  매콤한 김치찌개  ",
                         "--ad-copy-en", "Spicy and warm", "--ad-copy-kor", "오늘의 특가", "--prompt", "a stew",
                         "--image", str(product_photo), "--variants", "4")
    assert code == 0, err
    lines = out.splitlines()
    job_id = uuid.UUID(lines[0].split()[1])
    variant_ids = [uuid.UUID(line.split()[2]) for line in lines[1:]]
    assert len(variant_ids) == 4

    with engine.connect() as conn:
        job = conn.execute(sa.text("SELECT * FROM jobs WHERE job_id = :j"), {"j": str(job_id)}).one()
        inputs = conn.execute(sa.text("SELECT * FROM job_inputs WHERE job_id = :j"), {"j": str(job_id)}).one()
        asset = conn.execute(sa.text("SELECT * FROM image_assets WHERE image_asset_id = :a"),
                             {"a": str(inputs.product_image_asset_id)}).one()
        orders = conn.execute(sa.text("SELECT creation_order FROM jobs_variants WHERE job_id = :j ORDER BY 1"),
                              {"j": str(job_id)}).scalars().all()
    assert (job.tenant_id, job.current_step, job.status, job.expected_variants) == ("acme", "img_gen", "queued", 4)
    assert inputs.desc_kor == "매콤한 김치찌개"  # trimmed
    assert (inputs.ad_copy_eng, inputs.ad_copy_kor, inputs.prompt) == ("Spicy and warm", "오늘의 특가", "a stew")
    assert orders == [1, 2, 3, 4]
    stored = home / "assets" / asset.path
    assert asset.path.startswith("tenants/acme/product/") and stored.is_file()
    with Image.open(stored) as img:
        assert img.size == (120, 80) == (asset.width, asset.height)

    code, out, _ = run(capsys, "status", str(job_id))
    assert code == 0
    assert f"job {job_id}" in out and "img_gen/queued" in out and "variants 4/4" in out
    assert all(str(v) in out for v in variant_ids)

    code, out, _ = run(capsys, "status", str(job_id), "--json")
    data = json.loads(out)
    assert data["job_id"] == str(job_id) and data["status"] == "queued"
    assert [v["job_variants_id"] for v in data["variants"]] == [str(v) for v in variant_ids]


def test_submit_json_output_and_default_variant_count(engine: Engine, tenant: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "submit", "--tenant", tenant, "--description", "떡볶이", "--json")
    assert code == 0
    assert len(json.loads(out)["variant_ids"]) == 3


def test_status_shows_failure_reasons(engine: Engine, tenant: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.state import set_variant_state
    from variant_pipeline.data.engine import transaction

    _, out, _ = run(capsys, "submit", "--tenant", tenant, "--description", "떡볶이", "--variants", "1", "--json")
    ids = json.loads(out)
    with transaction(engine, "test") as conn:
        set_variant_state(conn, ids["variant_ids"][0], "img_gen", "failed", error="generator out of memory")
    code, out, _ = run(capsys, "status", ids["job_id"])
    assert code == 0
    assert "error: generator out of memory" in out and "error: all 1 variants failed" in out


def test_db_commands(engine: Engine, db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "db", "upgrade")
    assert (code, out.strip()) == (0, "database is up to date")
    code, out, _ = run(capsys, "db", "status")
    assert code == 0 and "applied 001_schema" in out and "applied 002_events" in out and "up to date" in out
    code, out, _ = run(capsys, "db", "url")
    assert (code, out.strip()) == (0, db_env)


def test_models_build_tiny_is_wired_to_the_bundle_builder() -> None:
    args = cli.build_parser().parse_args(["models", "build-tiny", "/tmp/x"])
    assert args.handler is cli._models_build_tiny and args.dir == Path("/tmp/x")


LONG = "가" * (MAX_DESCRIPTION_CHARS + 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "not-a-uuid"], "malformed job id"),
        (["status", str(uuid.UUID(int=1))], "no job with id"),
        (["submit", "--tenant", "acme", "--description", "x", "--variants", "0"], "between 1 and 16"),
        (["submit", "--tenant", "acme", "--description", "x", "--variants", "17"], "between 1 and 16"),
        (["submit", "--tenant", "acme", "--description", "   "], "description must not be empty"),
        (["submit", "--tenant", "acme", "--description", LONG], f"limit is {MAX_DESCRIPTION_CHARS}"),
        (["submit", "--tenant", "acme", "--description", "x", "--ad-copy-kor", "가" * (MAX_AD_COPY_KOR_CHARS + 1)],
         f"limit is {MAX_AD_COPY_KOR_CHARS}"),
        (["submit", "--tenant", "acme", "--description", "x", "--ad-copy-en", "a" * (MAX_AD_COPY_EN_CHARS + 1)],
         f"limit is {MAX_AD_COPY_EN_CHARS}"),
        (["submit", "--tenant", "acme", "--description", "x", "--prompt", "p" * (MAX_PROMPT_CHARS + 1)],
         f"limit is {MAX_PROMPT_CHARS}"),
        (["submit", "--tenant", "nobody", "--description", "x"], "unknown tenant 'nobody'"),
        (["submit", "--tenant", "../etc", "--description", "x"], "invalid tenant id"),
        (["submit", "--tenant", "acme", "--description", "x", "--image", "/no/such/photo.png"], "image file not found"),
    ],
    ids=["bad-uuid", "unknown-job", "zero-variants", "17-variants", "empty-description", "long-description",
         "long-kor-copy", "long-en-copy", "long-prompt", "unknown-tenant", "unsafe-tenant", "missing-image"],
)
def test_bad_input_is_one_error_line_and_writes_nothing(
    engine: Engine, tenant: str, home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = snapshot(engine)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert snapshot(engine) == before
    assert asset_files(home) == []


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b""],
                         ids=["text", "truncated-png", "empty"])
def test_non_image_files_are_rejected(engine: Engine, tenant: str, home: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    fake = tmp_path / "photo.png"
    fake.write_bytes(content)
    before = snapshot(engine)
    code, _, err = run(capsys, "submit", "--tenant", tenant, "--description", "x", "--image", str(fake))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "image" in err and str(fake) in err
    assert snapshot(engine) == before and asset_files(home) == []


def test_a_corrupt_image_body_is_rejected(engine: Engine, tenant: str, home: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (200, 200), (1, 2, 3)).save(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])  # a valid header, missing pixel data
    code, _, err = run(capsys, "submit", "--tenant", tenant, "--description", "x", "--image", str(cut))
    assert code == 2 and "not a readable image" in err
    assert snapshot(engine)["jobs"] == 0


def test_tiny_image_is_rejected(engine: Engine, tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "small.png"
    Image.new("RGB", (4, 4)).save(small)
    code, _, err = run(capsys, "submit", "--tenant", tenant, "--description", "x", "--image", str(small))
    assert code == 2 and "at least" in err


def test_failed_transaction_removes_the_saved_photo(engine: Engine, db_env: str, home: Path, product_photo: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The photo is valid, so it is saved before the transaction; the unknown tenant then rolls back.
    before = snapshot(engine)
    code, _, err = run(capsys, "submit", "--tenant", "ghost", "--description", "x", "--image", str(product_photo))
    assert code == 2 and "variant-pipeline tenant add ghost" in err
    assert snapshot(engine) == before
    assert asset_files(home) == []


def test_unreachable_database_in_a_subprocess(tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL="postgresql://nobody@127.0.0.1:1/x", VARIANT_PIPELINE_HOME=str(tmp_path))
    for argv in (["status", str(uuid.UUID(int=5))], ["db", "upgrade"],
                 ["submit", "--tenant", "acme", "--description", "x"]):
        proc = subprocess.run([sys.executable, "-m", "variant_pipeline.cli", *argv], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1
        assert proc.stderr.startswith("error: cannot reach the database at postgresql+psycopg2://nobody@127.0.0.1:1/x")


def test_missing_schema_is_explained(pg_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from variant_pipeline.data.engine import with_database

    # The server's own maintenance database exists but has no schema.
    monkeypatch.setenv("DATABASE_URL", with_database(pg_admin_url, "postgres"))
    monkeypatch.setenv("VARIANT_PIPELINE_HOME", str(tmp_path))
    code, _, err = run(capsys, "status", str(uuid.UUID(int=9)))
    assert code == 2 and "variant-pipeline db upgrade" in err

"""Every CLI subcommand with malformed arguments and unusual files ends in one ``error:`` line and
exit code 2, never a traceback; valid but unusual product photos (CMYK from a print workflow,
16-bit, palette with transparency, greyscale with alpha, EXIF-rotated) are accepted and stored
upright as RGB (RGBA where the photo has a cut-out)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from tests.fixtures.db import count_rows
from variant_pipeline import cli
from variant_pipeline.config import PROJECT_ROOT, load_settings
from variant_pipeline.data.storage import AssetStore

UNKNOWN = str(uuid.UUID(int=7))


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every runnable subcommand path of the parser, e.g. ("db", "upgrade")."""
    found: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, (*prefix, name))
    return found or {prefix}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {"dir": tmp_path / "folder", "text": tmp_path / "notes.png", "empty": tmp_path / "empty.jpg",
            "fifo": tmp_path / "pipe.png", "loop": tmp_path / "loop.png", "existing": tmp_path / "a-file"}
    made["dir"].mkdir()
    made["text"].write_text("not an image")
    made["empty"].write_bytes(b"")
    os.mkfifo(made["fifo"])
    made["loop"].symlink_to(made["loop"])
    made["existing"].write_text("x")
    return made


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _cases(files: dict[str, Path], busy_port: int) -> list[tuple[tuple[str, ...], list[str], str]]:
    """(subcommand, argv, part of the message)."""
    submit = ["submit", "--tenant", "acme", "--description"]
    return [
        ((), [], "the following arguments are required: COMMAND"),
        ((), ["status", UNKNOWN, "--bogus"], "unrecognized arguments: --bogus"),
        (("db", "upgrade"), ["db", "upgrade", "now"], "unrecognized arguments: now"),
        (("db", "status"), ["db", "status", "--verbose"], "unrecognized arguments: --verbose"),
        (("db", "start"), ["db", "start", "x"], "unrecognized arguments: x"),
        (("db", "stop"), ["db", "stop", "--all"], "unrecognized arguments: --all"),
        (("db", "url"), ["db", "url", "--dagster", "x"], "unrecognized arguments: x"),
        (("db",), ["db", "drop"], "invalid choice: 'drop'"),
        (("tenant", "add"), ["tenant", "add"], "the following arguments are required: tenant_id"),
        (("tenant", "add"), ["tenant", "add", "bad/id"], "invalid tenant id 'bad/id'"),
        (("tenant", "add"), ["tenant", "add", "shop", "--name", "My\x1bshop"],
         "tenant name contains the control character U+001B at position 3"),
        (("submit",), [*submit, "x", "--variants", "three"], "argument --variants: invalid int value: 'three'"),
        (("submit",), [*submit, "가게\x07 설명"], "description contains the control character U+0007 at position 3"),
        (("submit",), [*submit, "x", "--ad-copy-kor", "오늘만\n할인"],
         "Korean ad copy contains the control character U+000A at position 4"),
        (("submit",), [*submit, "x", "--prompt", "sunny\x00"], "prompt contains the control character U+0000 at position 6"),
        (("submit",), [*submit, "x", "--image", str(files["dir"])], "image path is not a file"),
        (("submit",), [*submit, "x", "--image", str(files["text"])], "not a readable image"),
        (("submit",), [*submit, "x", "--image", str(files["empty"])], "image file is empty"),
        (("submit",), [*submit, "x", "--image", str(files["fifo"])], "image path is not a file"),
        (("submit",), [*submit, "x", "--image", str(files["loop"])], "loop.png"),
        (("status",), ["status", "12345"], "malformed job id '12345'"),
        (("status",), ["status", UNKNOWN], f"no job with id {UNKNOWN}"),
        (("results",), ["results", "g" * 36], "malformed job id"),
        (("results",), ["results", UNKNOWN, "--json"], f"no job with id {UNKNOWN}"),
        (("results",), ["results", UNKNOWN, "--html", str(files["dir"])], "cannot write the HTML gallery"),
        (("results",), ["results", UNKNOWN, "--html", str(files["dir"] / "no" / "x.html")],
         "cannot write the HTML gallery"),
        (("retry",), ["retry", "variant-2"], "malformed variant or job id 'variant-2'"),
        (("retry",), ["retry", UNKNOWN, "--from", "paint"], ""),
        (("models", "build-tiny"), ["models", "build-tiny"], "the following arguments are required: dir"),
        (("models", "build-tiny"), ["models", "build-tiny", str(files["existing"])], str(files["existing"])),
        (("prune",), ["prune", "--budget", "-1"], "expected a whole number, 0 or more, got '-1'"),
        (("prune",), ["prune", "--older-than", "banana"], "invalid duration 'banana'"),
        (("prune",), ["prune", "--older-than", "30d", "--force"], "unrecognized arguments: --force"),
        (("metrics",), ["metrics", "--port", "70000"], "argument --port: a port is 1-65535, got 70000"),
        (("metrics",), ["metrics", "--port", "http"], "argument --port: not a port number: 'http'"),
        (("metrics",), ["metrics", "--once"], "no Dagster instance at"),
        (("doctor",), ["doctor", "--min-free-gb", "-1"], "argument --min-free-gb: must be 0 or more, got -1"),
        (("doctor",), ["doctor", "--min-free-gb", "lots"], "argument --min-free-gb: not a number: 'lots'"),
        (("doctor",), ["doctor", "--fix"], "unrecognized arguments: --fix"),
        (("serve", "start"), ["serve", "start", "--port", "ray"], "argument --port: invalid int value: 'ray'"),
        (("serve", "start"), ["serve", "start", "--port", "6379"], "port 6379 is Redis's"),
        (("serve", "start"), ["serve", "start", "--port", str(busy_port)],
         f"port {busy_port} on 127.0.0.1 is already in use"),
        (("serve", "status"), ["serve", "status"], "no Ray cluster is configured"),
        (("serve", "stop"), ["serve", "stop", "--all"], "unrecognized arguments: --all"),
        (("serve",), ["serve", "restart"], "invalid choice: 'restart'"),
        (("demo",), ["demo", "--port", "http"], "argument --port: invalid int value: 'http'"),
        (("demo",), ["demo", "--variants", "0"], "number of variants must be between 1 and 16, got 0"),
        (("demo",), ["demo", "--port", "70000"], "--port must be between 1 and 65535"),
        (("demo",), ["demo", "--port", str(busy_port)], f"port {busy_port} on 127.0.0.1 is not free"),
    ]


def test_every_subcommand_answers_bad_input_with_one_line_and_exit_2(
    engine: Engine, db_env: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str],
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bundle already built (as after `demo`): `serve start` would otherwise build it first, and
    # its progress bars would precede the error line (alone, this test saw them; in the suite an
    # earlier test's bundle hid it).
    monkeypatch.setenv("VP_MODELS_DIR", str(tiny_models["root"]))
    with _busy_port() as busy:
        cases = _cases(files, busy.getsockname()[1])
        covered = {command for command, _argv, _msg in cases}
        assert leaf_commands(cli.build_parser()) <= covered  # a new subcommand needs its cases here
        for _command, argv, message in cases:
            code = cli.main(argv)
            out, err = capsys.readouterr()
            assert code == 2, (argv, err)
            assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
            assert "Traceback" not in out + err
    assert count_rows(engine, "jobs") == 0 and count_rows(engine, "tenants") == 0


def test_bad_input_in_a_real_process_never_prints_a_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, VARIANT_PIPELINE_HOME=str(tmp_path), DATABASE_URL="postgresql://nobody@127.0.0.1:1/x")
    for argv in (["results", "x"], ["submit", "--tenant", "a", "--description", "a\x01"], ["models", "build-tiny"]):
        proc = subprocess.run([sys.executable, "-m", "variant_pipeline.cli", *argv], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


# --- Unusual but valid photos -----------------------------------------------------------------


def _cmyk_jpeg(path: Path) -> tuple[int, int, int]:
    Image.new("CMYK", (120, 80), (0, 200, 230, 20)).save(path, "JPEG", quality=95)
    return Image.open(path).convert("RGB").getpixel((60, 40))


def _png16(path: Path) -> tuple[int, int, int]:
    ramp = np.tile(np.linspace(0, 65535, 96, dtype=np.uint16), (64, 1))
    Image.fromarray(ramp).save(path)  # mode I;16: PIL's own convert("RGB") would clip it to white
    return (127, 127, 127)


def _palette_transparent(path: Path) -> None:
    image = Image.new("P", (64, 64), 1)
    image.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    image.paste(0, (0, 0, 32, 64))  # left half: palette entry 0, the transparent one
    image.save(path, transparency=0)


def _exif_rotated(path: Path) -> None:
    image = Image.new("RGB", (120, 60), (20, 120, 220))
    image.paste((250, 250, 0), (0, 0, 20, 60))  # a yellow band on the stored left edge
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(path, "JPEG", exif=exif, quality=95)


def test_unusual_valid_photos_are_stored_upright_as_rgb(engine: Engine, db_env: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tenant", "add", "print-shop"]) == 0
    capsys.readouterr()
    cmyk, png16, palette, la, rotated = (tmp_path / n for n in ("cmyk.jpg", "g16.png", "p.png", "la.png", "exif.jpg"))
    cmyk_rgb = _cmyk_jpeg(cmyk)
    gray = _png16(png16)
    _palette_transparent(palette)
    Image.new("LA", (50, 40), (90, 128)).save(la)
    _exif_rotated(rotated)
    expected = {cmyk: ("RGB", (120, 80)), png16: ("RGB", (96, 64)), palette: ("RGBA", (64, 64)),
                la: ("RGBA", (50, 40)), rotated: ("RGB", (60, 120))}
    for photo, (mode, size) in expected.items():
        code = cli.main(["submit", "--tenant", "print-shop", "--description", "인쇄용 사진", "--image", str(photo),
                         "--variants", "1", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, (photo.name, err)
        job_id = json.loads(out)["job_id"]
        with engine.connect() as conn:
            path = conn.execute(sa.text("SELECT path FROM image_assets WHERE job_id = :j AND image_type = 'product'"),
                                {"j": job_id}).scalar_one()
        stored = Image.open(AssetStore.from_settings(load_settings()).path_for(path))
        assert (stored.mode, stored.size) == (mode, size), photo.name
        if photo is cmyk:
            assert max(abs(a - b) for a, b in zip(stored.getpixel((60, 40)), cmyk_rgb, strict=True)) <= 2
        if photo is png16:
            assert stored.getpixel((0, 0)) == (0, 0, 0) and stored.getpixel((95, 0)) == (255, 255, 255)
            assert max(abs(a - b) for a, b in zip(stored.getpixel((48, 10)), gray, strict=True)) <= 3
        if photo is palette:
            assert stored.getpixel((10, 10))[3] == 0 and stored.getpixel((50, 10)) == (200, 30, 30, 255)
        if photo is rotated:  # displayed upright: the band is now along the top
            assert stored.getpixel((30, 5))[:2] > (200, 200) and stored.getpixel((30, 100))[2] > 180

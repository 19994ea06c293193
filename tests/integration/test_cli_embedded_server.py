"""The CLI and the embedded PostgreSQL: a command that had to start it stops it again (a `results`
after the demo ended must not leave a server running unannounced); `db start` and `db url`, whose
point is a server for other processes, keep it."""

from __future__ import annotations

import pytest

from variant_pipeline.cli import main
from variant_pipeline.data.embedded_pg import embedded_server_state, stop_embedded_server


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VARIANT_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_DATABASE_URL", raising=False)
    yield tmp_path / "home"
    stop_embedded_server()


def test_a_command_stops_the_embedded_server_it_started_and_leaves_one_it_found(empty_home, capsys) -> None:
    assert main(["db", "upgrade"]) == 0
    assert embedded_server_state().initialized and not embedded_server_state().running
    assert main(["status", "00000000-0000-0000-0000-000000000000"]) == 2  # unknown job; server started for it
    assert not embedded_server_state().running

    assert main(["db", "start"]) == 0
    pid = embedded_server_state().pid
    assert pid is not None
    assert main(["db", "status"]) == 0
    assert embedded_server_state().pid == pid  # found running: left running
    capsys.readouterr()
    assert main(["db", "stop"]) == 0 and not embedded_server_state().running
    assert main(["db", "url"]) == 0
    assert embedded_server_state().running  # the URL is for the processes that come next

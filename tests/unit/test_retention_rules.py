"""Prune's orphan rule as a pure function: no store, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from variant_pipeline.data.storage import StoredFile
from variant_pipeline.state.retention import orphans

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _file(path: str, minutes: int) -> StoredFile:
    return StoredFile(relative_path=path, size=10, modified=T0 + timedelta(minutes=minutes))


def test_an_orphan_is_named_by_no_live_row_and_older_than_every_running_attempt() -> None:
    files = [_file("tenants/t/b.png", 0), _file("tenants/t/a.png", 5), _file("tenants/t/named.png", 0),
             _file("tenants/t/fresh.png", 30)]
    running_since = T0 + timedelta(minutes=20)
    found = orphans(files, {"tenants/t/named.png"}, running_since)
    # fresh.png is younger than an attempt still running: that attempt may name it when it commits.
    assert [f.relative_path for f in found] == ["tenants/t/a.png", "tenants/t/b.png"]
    assert [f.relative_path for f in orphans(files, {"tenants/t/named.png"}, None)] == [
        "tenants/t/a.png", "tenants/t/b.png", "tenants/t/fresh.png"]
    assert orphans(files, {f.relative_path for f in files}, None) == []
    # A file exactly as old as the oldest running attempt's start may be its own: kept.
    assert orphans([_file("tenants/t/edge.png", 20)], set(), running_since) == []

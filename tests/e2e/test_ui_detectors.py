"""What the UI benchmark (scripts/bench_ui.py) counts as "drawn", checked in a real Chromium
against a real Dagster web server.

The benchmark once counted any spinner as "still loading". A group or asset that is
materializing draws a spinning status icon for as long as its run goes, so such a page never
counted as loaded. The lineage detector looks for what a person came for instead: every group
with its status counts.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from bench_ui import READY, WebServer, wait_ready  # noqa: E402
from browser_check import Chromium  # noqa: E402

pytestmark = pytest.mark.e2e

GRAPH = [
    {"name": "stage_a", "group": "first_stages", "partitions": "keys", "deps": [], "checks": ["looks_right"]},
    {"name": "stage_b", "group": "first_stages", "partitions": "keys", "deps": ["stage_a"], "checks": []},
    {"name": "stage_c", "group": "last_stages", "partitions": "keys", "deps": ["stage_b"], "checks": []},
]
SPINNERS = "document.querySelectorAll('[class*=\"Spinner\"], [role=\"progressbar\"]')"
# Spinners drawn inside a group's status badges: status, not loading.
SPINNERS_IN_BADGES = (
    "[...document.querySelectorAll('[class*=\"CollapsedGroupNode_collapsedGroupNodeBox\"] .BaseTag')]"
    ".filter(t => t.querySelector('[class*=\"Spinner\"]')).length"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def materializing_home(tmp_path: Path):
    """A Dagster home in which stage_a is materialized and stage_b is materializing: a run is going."""
    import dagster as dg
    from dagster import DagsterEvent, DagsterEventType, DagsterRun, DagsterRunStatus

    from variant_pipeline.assets.dagster_internals import AssetMaterializationPlannedData

    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("keys", ["k1", "k2"])
        for key in ("k1", "k2"):
            instance.report_runless_asset_event(dg.AssetMaterialization("stage_a", partition=key))
        run = instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()),
                                          status=DagsterRunStatus.STARTED, tags={"dagster/partition": "k1"}))
        instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
                         job_name="__ASSET_JOB",
                         event_specific_data=AssetMaterializationPlannedData(dg.AssetKey("stage_b"),
                                                                             partition="k1")),
            run_id=run.run_id,
        )
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    return home, graph


def test_the_lineage_page_counts_as_drawn_while_a_group_is_materializing(materializing_home, tmp_path):
    assert shutil.which("chromium"), "chromium is missing: run scripts/setup.sh"
    home, graph = materializing_home
    import os

    server = WebServer({**os.environ, "DAGSTER_HOME": str(home)}, "bare", _free_port(), graph, tmp_path / "logs")
    browser = Chromium(shutil.which("chromium"), 1400, 900)
    try:
        browser.navigate(f"{server.base}/asset-groups")
        drawn = wait_ready(browser, READY["lineage"] % {"groups": 2}, 90)
        assert drawn is not None, "the lineage page never showed both groups with their status counts"
        # The materializing group keeps a spinning status icon in its badge: a detector that waits
        # for "no spinner anywhere" would wait for as long as the run goes.
        deadline = time.monotonic() + 10
        while browser.evaluate(SPINNERS_IN_BADGES) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert browser.evaluate(SPINNERS_IN_BADGES) >= 1
        assert browser.evaluate(f"{SPINNERS}.length") >= 1
        assert browser.evaluate(READY["lineage"] % {"groups": 2})
        text = browser.evaluate("document.body.innerText")
        assert "first_stages" in text and "last_stages" in text
    finally:
        browser.close()
        server.stop()


def test_a_group_still_fetching_its_statuses_is_not_drawn(tmp_path):
    """The same detector on the page as Dagster draws it before the statuses arrive."""
    assert shutil.which("chromium"), "chromium is missing: run scripts/setup.sh"
    page = tmp_path / "fetching.html"
    page.write_text(
        '<div class="CollapsedGroupNode_collapsedGroupNodeBox__x">first_stages'
        '<div class="BaseTag">2</div></div>'
        '<div class="CollapsedGroupNode_collapsedGroupNodeBox__x">last_stages 1 asset (fetching statuses)</div>'
    )
    browser = Chromium(shutil.which("chromium"), 800, 600)
    try:
        browser.navigate(page.as_uri())
        assert wait_ready(browser, "document.body.innerText.includes('fetching statuses')", 30) is not None
        assert browser.evaluate(READY["lineage"] % {"groups": 2}) is False
        browser.evaluate("document.body.lastChild.innerHTML = 'last_stages <div class=\"BaseTag\">1</div>'")
        assert browser.evaluate(READY["lineage"] % {"groups": 2}) is True
    finally:
        browser.close()

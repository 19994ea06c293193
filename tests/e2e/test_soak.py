"""A short soak (scripts/soak.py): three minutes of seeded workload and faults against a real
daemon, web server and embedded PostgreSQL of its own, with recovery settings shortened so that
recovery happens within the run. It must end with no invariant violated, after faults of several
kinds, with jobs finished.

Seed 6 draws, with these rates: the daemon killed (and started again 17 s later), the code
server killed, PostgreSQL stopped with ``-m immediate`` and started again, a run worker killed
mid-stage, and one to be stopped for 29 s (skipped when no run worker is inside a stage for a
minute: on this 2-core machine the killed worker's GPU pool slot holds every run back that long).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from variant_pipeline.config import PROJECT_ROOT

SEED = 6
SHORT_RECOVERY = ("VP_RECOVERY_INTERVAL_S=2", "VP_RETRY_BACKOFF_S=1", "VP_RUN_LEASE_GRACE_S=20",
                  "VP_STALL_AFTER_S=30")


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_a_three_minute_soak_with_faults_of_several_kinds_violates_no_invariant(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    command = [sys.executable, str(PROJECT_ROOT / "scripts" / "soak.py"), "--duration", "3m", "--seed", str(SEED),
               "--jobs-per-min", "2", "--faults-per-min", "3", "--quiet-timeout", "600", "--check-interval", "20",
               "--out", str(out), "--quiet"]
    for setting in SHORT_RECOVERY:
        command += ["--env", setting]
    proc = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1400)
    log = (out / "soak.log").read_text(encoding="utf-8")[-6000:] if (out / "soak.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}\n{log}"

    report = json.loads((out / "soak.json").read_text(encoding="utf-8"))
    assert report["violations"] == []
    faults = report["faults_by_kind"]
    assert sum(faults.values()) >= 4 and len(faults) >= 3, faults
    assert report["jobs"].get("done", 0) >= 2, report["jobs"]
    assert all(not k.startswith("open") for k in report["jobs"]), report["jobs"]
    # Every fault that happened was recovered from, within the quiet period.
    for kind, recovery in report["recovery_by_kind"].items():
        assert recovery["recovered"] == recovery["n"], (kind, recovery)
    assert (out / "timeline.png").stat().st_size > 0 and "No violations" in (out / "summary.md").read_text()
    print(f"\n{proc.stdout.strip().splitlines()[-1]}")

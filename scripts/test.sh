#!/usr/bin/env bash
# The test command: set up, lint, then the whole test suite against a real (embedded) PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check variant_pipeline tests scripts
# Two workers, a test file at a time each: the daemon tests spend most of their time waiting on
# the pipeline, so two at a time cut the run by about a third on two cores. VP_TEST_WORKERS=0 runs
# everything in one process (for -s and --pdb).
.venv/bin/python -m pytest -n "${VP_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"

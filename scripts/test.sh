#!/usr/bin/env bash
# The test command: set up, lint, then the whole test suite against a real (embedded) PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check variant_pipeline tests scripts
# Two workers: the daemon tests spend most of their time waiting on the pipeline, so two at a
# time nearly halve the run on two cores. VP_TEST_WORKERS=0 runs everything in one process
# (needed for -s / pdb).
.venv/bin/python -m pytest -n "${VP_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"

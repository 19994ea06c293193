#!/usr/bin/env bash
# The test command: set up, lint, then the whole test suite against a real (embedded) PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check variant_pipeline tests scripts
.venv/bin/python -m pytest "$@"

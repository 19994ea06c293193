#!/usr/bin/env bash
# The main command: set up, then run the sample job through the whole pipeline on the embedded
# PostgreSQL and the tiny offline models, with the Dagster UI on http://127.0.0.1:3000.
# Extra arguments go to `variant-pipeline demo` (--port, --variants, --exit-when-done).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/variant-pipeline demo "$@"

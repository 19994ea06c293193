"""Who changed a row: the origin each state write records on its outbox event.

Writers set it for their transaction (``SET LOCAL variant_pipeline.origin``); a change made
without one is recorded as ``external`` (``vp_change_origin`` in sql/002_events.sql). The outbox
sensor starts runs for changes made by others, never for the pipeline's own progress: these
prefixes are how it tells them apart (``transitions.is_own_run_write``).
"""

from __future__ import annotations

# A stage asset's writes, inside a Dagster run: their run carries on by itself.
RUN_ORIGIN_PREFIX = "dagster-run:"
# The recovery sensor's writes: it launches the runs they call for itself.
RECOVERY_ORIGIN_PREFIX = "recovery:"
RECOVERY_ORIGIN = f"{RECOVERY_ORIGIN_PREFIX}sensor"
# ``variant-pipeline retry``: an external request, which the outbox sensor acts on.
MANUAL_RETRY_ORIGIN = "cli:retry"


def run_origin(run_id: str) -> str:
    """The origin of the writes of Dagster run ``run_id``."""
    return f"{RUN_ORIGIN_PREFIX}{run_id}"

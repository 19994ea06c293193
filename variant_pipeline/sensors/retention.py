"""Retention on the Dagster side: partitions, runs in flight, the outbox sensor's saved cursor,
and the prune schedule (on whenever ``VP_PRUNE_OLDER_THAN`` or the partition budget is set; the
budget is, by default).

The work itself is ``variant_pipeline.state.retention.prune``; the CLI and the schedule both call it.
"""


import os
import time
from collections.abc import Sequence

import dagster as dg
from dagster import OpExecutionContext

from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.sensors.outbox import saved_outbox_cursor

PRUNE_JOB_NAME = "prune_job"
PRUNE_SCHEDULE_NAME = "prune_schedule"
# Runs that may still write for a partition (a run that ended writes nothing more).
_IN_FLIGHT = [dg.DagsterRunStatus[s] for s in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")]


class DagsterOrchestrator:
    """``state.retention.Orchestrator`` over a Dagster instance.

    Partition keys are read once per prune (one query, not one per key: at 100,000 partitions
    that is the difference between a second and half an hour); keys added meanwhile belong to
    jobs that are not finished, which prune skips after its own check under the row locks.
    Runs in flight are read again whenever the last read is over a second old.
    """

    def __init__(self, instance: dg.DagsterInstance, runs_max_age_s: float = 1.0) -> None:
        self.instance = instance
        self._keys: dict[str, set[str]] = {}
        self._runs_max_age_s = runs_max_age_s
        self._in_flight: tuple[float, set[str]] | None = None

    @staticmethod
    def _name(level: str) -> str:
        return (variant_partitions if level == "variant" else job_partitions).name

    def _known(self, level: str) -> set[str]:
        if level not in self._keys:
            self._keys[level] = set(self.instance.get_dynamic_partitions(self._name(level)))
        return self._keys[level]

    def existing_partitions(self, level: str, keys: Sequence[str]) -> list[str]:
        known = self._known(level)
        return [k for k in keys if k in known]

    def partition_count(self, level: str) -> int:
        return len(self._known(level))

    def delete_partitions(self, level: str, keys: Sequence[str]) -> None:
        name, known = self._name(level), self._known(level)
        for key in keys:  # Dagster deletes one key per call
            self.instance.delete_dynamic_partition(name, key)
            known.discard(key)

    def runs_of(self, keys: Sequence[str]) -> list[str]:
        return list(self.instance.get_run_ids(dg.RunsFilter(tags={"dagster/partition": list(keys)})))

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:  # the run, its tags and its event records
            self.instance.delete_run(run_id)

    def partitions_in_flight(self, keys: Sequence[str]) -> set[str]:
        now = time.monotonic()
        if self._in_flight is None or now - self._in_flight[0] > self._runs_max_age_s:
            runs = self.instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT))
            self._in_flight = (now, {r.tags.get("dagster/partition", "") for r in runs})
        return self._in_flight[1] & set(keys)

    def outbox_cursor(self) -> str | None:
        return saved_outbox_cursor(self.instance)


def open_instance() -> dg.DagsterInstance:
    """The Dagster instance the daemon uses: ``DAGSTER_HOME``, else ``$VARIANT_PIPELINE_HOME/dagster``
    as ``demo`` writes it, with its storage on the configured server."""
    from variant_pipeline.config import load_settings
    from variant_pipeline.data.engine import dagster_database_url
    from variant_pipeline.validation import InputError

    if not os.environ.get("DAGSTER_HOME"):
        home = load_settings().home / "dagster"
        if not (home / "dagster.yaml").exists():
            raise InputError(f"no Dagster instance at {home} (start the pipeline once, or set DAGSTER_HOME)")
        os.environ["DAGSTER_HOME"] = str(home)
    if not os.environ.get("VP_DAGSTER_STORAGE_URL"):
        os.environ["VP_DAGSTER_STORAGE_URL"] = dagster_database_url()
    return dg.DagsterInstance.get()


@dg.op(required_resource_keys={"database", "asset_storage"})
def prune_op(context: OpExecutionContext) -> None:
    from variant_pipeline.config import load_settings
    from variant_pipeline.state.retention import prune
    from variant_pipeline.validation import parse_duration

    settings = load_settings()
    report = prune(
        context.resources.database.engine(), DagsterOrchestrator(context.instance),
        context.resources.asset_storage.store(),
        parse_duration(settings.prune_older_than) if settings.prune_older_than else None,
        rows=settings.prune_rows, orphan_min_age_s=settings.orphan_min_age_s,
        partition_budget=settings.partition_budget or None,
    )
    for line in report.lines():
        context.log.info(line)


@dg.job(name=PRUNE_JOB_NAME, executor_def=dg.in_process_executor,
        description="variant-pipeline prune with the VP_PRUNE_* settings and VP_PARTITION_BUDGET")
def prune_job() -> None:
    prune_op()


def retention_schedules() -> list[dg.ScheduleDefinition]:
    """The prune schedule (at ``VP_PRUNE_CRON``) when ``VP_PRUNE_OLDER_THAN`` or the partition
    budget is set (the budget is by default), else none."""
    from variant_pipeline.config import load_settings

    settings = load_settings()
    if not settings.prune_older_than and not settings.partition_budget:
        return []
    return [dg.ScheduleDefinition(
        name=PRUNE_SCHEDULE_NAME, job=prune_job, cron_schedule=settings.prune_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Retention: prune with VP_PRUNE_OLDER_THAN, VP_PRUNE_ROWS and VP_PARTITION_BUDGET "
                    "(see variant-pipeline prune).",
    )]

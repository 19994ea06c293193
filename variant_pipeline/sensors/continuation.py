"""Hand-materialized stages continue downstream, once.

When a person materializes a stage for one partition from the UI or the command line (re-rendering one
variant's overlay, say), that run does only what was selected. When it succeeds, this sensor
launches one run for the stages after the furthest one it materialized. The pipeline's own runs
(from the outbox sensor, or continuations themselves) already carry a partition through every
remaining stage and are ignored, so nothing is ever continued twice.

A plain sensor over Dagster's run-success events, with their storage id as its cursor, rather
than a ``run_status_sensor``: that one ends its tick at the first run its function answers, so a
sensor that answers every run reads one run per tick, and at more successful runs a minute than
ticks (about 12) it falls behind without bound. This one reads every success since its cursor,
up to ``BATCH`` a tick, and skips the pipeline's own runs from their tags alone. It sees runs of
every code location, and runs started from the command line (which have none).
"""

from __future__ import annotations

import json

import dagster as dg

from variant_pipeline.assets.jobs import LAUNCHED_BY_TAG, PIPELINE_JOBS, SOURCE_RUN_TAG, run_request
from variant_pipeline.state.transitions import continuation_start

CONTINUATION_SENSOR_NAME = "manual_run_continuation_sensor"
CONTINUATION = "continuation"
BATCH = 500  # run successes read per tick


def _after(cursor: str | None) -> int | None:
    """The storage id of the last run success read; also from the cursor the earlier run-status
    sensor of this name kept (its JSON has ``record_id``)."""
    if not cursor:
        return None
    try:
        return int(cursor)
    except ValueError:
        record_id = json.loads(cursor).get("record_id")
        return int(record_id) if record_id is not None else None


def _successes(instance: dg.DagsterInstance, after: int | None, limit: int, ascending: bool) -> list[dg.EventLogRecord]:
    return list(instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(event_type=dg.DagsterEventType.RUN_SUCCESS, after_storage_id=after),
        limit=limit, ascending=ascending).records)


def _continuation(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.RunRequest | None:
    partition = run.tags.get("dagster/partition")
    if run.tags.get(LAUNCHED_BY_TAG) or not partition:
        return None  # the pipeline's own run carried on by itself; a run of no single partition
    # What the run actually materialized (its selection may be unset, e.g. a whole job).
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                                           limit=1000).records
    start = continuation_start({r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records})
    if start is None:
        return None
    return run_request(partition_key=partition, start_stage=start, run_key=f"continue:{run.run_id}",
                       launched_by=CONTINUATION, tags={SOURCE_RUN_TAG: run.run_id})


def build_continuation_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=CONTINUATION_SENSOR_NAME,
        jobs=PIPELINE_JOBS,
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a successful hand-started run of some stages for one partition, runs the "
        "remaining downstream stages of that partition once.",
    )
    def manual_run_continuation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        after = _after(context.cursor)
        if after is None:  # a new sensor starts after the runs that succeeded before it
            latest = _successes(instance, None, 1, ascending=False)
            return dg.SensorResult(cursor=str(latest[0].storage_id if latest else 0),
                                   skip_reason="started: runs that succeed from now on are continued")
        events = _successes(instance, after, BATCH, ascending=True)
        if not events:
            return dg.SensorResult(skip_reason="no run succeeded since the last tick")
        runs = {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records(
            filters=dg.RunsFilter(run_ids=list({e.event_log_entry.run_id for e in events})))}
        requests = [request for e in events if (run := runs.get(e.event_log_entry.run_id)) is not None
                    if (request := _continuation(instance, run)) is not None]
        return dg.SensorResult(run_requests=requests, cursor=str(events[-1].storage_id),
                               skip_reason=None if requests else f"{len(events)} runs succeeded, none by hand")

    return manual_run_continuation_sensor

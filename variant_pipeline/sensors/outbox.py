"""The outbox sensor: pipeline_events in, dynamic partitions and runs out.

Each tick reads the events after its cursor with the never-skip reader, adds a partition for
every variant and job it has not seen, and requests one run per partition that needs work, all
in one ``SensorResult`` (the daemon applies the partition adds before it creates the runs, and
saves the cursor only after both). Run keys are derived from event ids, so a repeated or
crashed tick never launches a second run for the same event.

Latency: the daemon evaluates sensors on a 5 s loop. A tick that finds nothing to do LISTENs
for the NOTIFY that accompanies every outbox row for most of that interval (VP_SENSOR_LISTEN_S)
and returns as soon as an event asks for work, so a new event usually waits milliseconds, not
seconds, for its tick. Events that ask for nothing (a run's own progress) move the cursor on
without ending the wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from variant_pipeline.assets.jobs import EVENT_TAG, PIPELINE_JOBS, asset_selection, run_request
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.config import load_settings
from variant_pipeline.data.engine import Engine
from variant_pipeline.data.outbox import CHANNELS, Event, NotifyListener, decode_cursor, read_events_after
from variant_pipeline.resources.database import DatabaseResource
from variant_pipeline.stages import Level
from variant_pipeline.state.transitions import is_request, start_stage_for

OUTBOX_SENSOR_NAME = "outbox_sensor"

MAX_EVENTS_PER_TICK = 300  # keeps partition adds per tick cheap (about 15 ms each in the daemon)
MAX_LISTEN_S = 4.5  # under the daemon's 5 s loop, so ticks do not pile up


@dataclass(frozen=True)
class PlannedRun:
    level: str  # 'variant' | 'job'
    partition_key: str
    start_stage: str
    event_id: int

    @property
    def run_key(self) -> str:
        return f"{self.level}:{self.partition_key}:from:{self.start_stage}:event:{self.event_id}"

    @property
    def asset_selection(self) -> list[dg.AssetKey]:
        return asset_selection(self.start_stage)


@dataclass(frozen=True)
class TickPlan:
    new_variant_keys: list[str]
    new_job_keys: list[str]
    runs: list[PlannedRun]


def plan_tick(events: Sequence[Event], known_variant_keys: Iterable[str], known_job_keys: Iterable[str]) -> TickPlan:
    """Pure decision of what one batch of events asks for.

    Only the latest event per partition counts: if an external system queued a variant and then
    marked its image done within one batch, one run starts from the later state.
    """
    known_variants, known_jobs = set(known_variant_keys), set(known_job_keys)
    new_variants: list[str] = []
    new_jobs: list[str] = []
    latest: dict[tuple[str, str], Event] = {}
    for event in events:
        job_key = str(event.job_id)
        if job_key not in known_jobs:
            known_jobs.add(job_key)
            new_jobs.append(job_key)
        if event.level == Level.VARIANT and event.job_variants_id is not None:
            variant_key = str(event.job_variants_id)
            if variant_key not in known_variants:
                known_variants.add(variant_key)
                new_variants.append(variant_key)
        # A run's own progress is not a request, and must not hide an earlier request in the batch.
        if is_request(event):
            partition = str(event.job_variants_id) if event.level == Level.VARIANT else job_key
            latest[(event.level, partition)] = event

    runs: list[PlannedRun] = []
    for (level, key), event in latest.items():
        start = start_stage_for(event)  # on the event's own level
        if start is None:
            continue
        runs.append(PlannedRun(level=level, partition_key=key, start_stage=start, event_id=event.id))
    return TickPlan(new_variant_keys=new_variants, new_job_keys=new_jobs, runs=runs)


def next_plan(engine: Engine, cursor: str | None, budget_s: float,
              plan: Callable[[list[Event]], TickPlan]) -> tuple[TickPlan | None, str, int]:
    """Read events until some ask for work (or add a partition), or the budget runs out.

    Returns the plan (None when nothing asked for anything), the cursor after every event read,
    and how many events were read. Events that ask for nothing, like a run's own progress, move
    the cursor on without ending the wait, so an external event arriving a moment later is still
    picked up within milliseconds.
    """
    deadline = time.monotonic() + budget_s
    read = 0
    # LISTEN before the first read: an event committed after the read still wakes us.
    with NotifyListener(engine, CHANNELS) as listener:
        while True:
            events, cursor = read_events_after(engine, cursor, limit=MAX_EVENTS_PER_TICK)
            read += len(events)
            if events:
                tick = plan(events)
                if tick.runs or tick.new_variant_keys or tick.new_job_keys:
                    return tick, cursor, read
                if len(events) == MAX_EVENTS_PER_TICK:
                    continue  # more are waiting
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, cursor, read
            # Re-read on a notification, and every half second anyway: an event can become
            # readable only when an older transaction ends, which sends no notification.
            listener.wait(min(remaining, 0.5))


def listen_budget_s() -> float:
    """VP_SENSOR_LISTEN_S (default 4 s), capped below the daemon's 5 s sensor loop."""
    return max(0.0, min(load_settings().sensor_listen_s, MAX_LISTEN_S))


def build_outbox_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=OUTBOX_SENSOR_NAME,
        jobs=PIPELINE_JOBS,
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reads pipeline_events (the trigger-fed outbox) after its cursor; adds partitions "
        "for new variants and jobs and launches the runs their state changes ask for.",
    )
    def outbox_sensor(context: dg.SensorEvaluationContext,
                      database: DatabaseResource) -> dg.SensorResult | dg.SkipReason:
        instance = context.instance

        def plan(events: list[Event]) -> TickPlan:
            return plan_tick(
                events,
                known_variant_keys=_existing(instance, variant_partitions.name, events, "variant"),
                known_job_keys=_existing(instance, job_partitions.name, events, "job"),
            )

        tick, cursor, read = next_plan(database.engine(), context.cursor, listen_budget_s(), plan)
        if tick is None:
            if read:  # only events that ask for nothing: keep the cursor moving
                return dg.SensorResult(run_requests=[], cursor=cursor)
            return dg.SkipReason("no new pipeline events")
        run_requests = [
            run_request(partition_key=run.partition_key, start_stage=run.start_stage, run_key=run.run_key,
                        launched_by=OUTBOX_SENSOR_NAME, tags={EVENT_TAG: str(run.event_id)})
            for run in tick.runs
        ]
        partition_requests = []
        if tick.new_variant_keys:
            partition_requests.append(variant_partitions.build_add_request(tick.new_variant_keys))
        if tick.new_job_keys:
            partition_requests.append(job_partitions.build_add_request(tick.new_job_keys))
        context.log.info(
            f"{read} events -> {len(run_requests)} runs, "
            f"{len(tick.new_variant_keys)} new variants, {len(tick.new_job_keys)} new jobs"
        )
        return dg.SensorResult(
            run_requests=run_requests, dynamic_partitions_requests=partition_requests, cursor=cursor
        )

    return outbox_sensor


def saved_outbox_cursor(instance: dg.DagsterInstance) -> str | None:
    """The outbox sensor's saved cursor; the oldest one if several code locations run it."""
    cursors = [
        state.instigator_data.cursor
        for state in instance.all_instigator_state()
        if state.instigator_name == OUTBOX_SENSOR_NAME and state.instigator_data is not None
        and getattr(state.instigator_data, "cursor", None)
    ]
    return min(cursors, key=decode_cursor) if cursors else None


def _existing(instance: dg.DagsterInstance, partitions_name: str, events: Sequence[Event], level: str) -> set[str]:
    keys = {
        str(e.job_variants_id) if level == "variant" else str(e.job_id)
        for e in events
        if (level == "job" or (e.level == Level.VARIANT and e.job_variants_id is not None))
    }
    return {k for k in keys if instance.has_dynamic_partition(partitions_name, k)}

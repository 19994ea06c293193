"""``variant-pipeline metrics``: a Prometheus endpoint that reads the pipeline's state at each scrape.

Nothing is instrumented: every figure comes from PostgreSQL (the job tables, the outbox, the
attempt log) and from the Dagster instance (runs, the outbox sensor's cursor), so any number of
run processes, on any number of hosts, is counted, and a run that died counts as what it left.

Counters (``..._total``) count what ended since this exporter started, as a process's own counters
do: each scrape adds what ended since the last one, read by transaction id, never twice and never
skipped (data/metrics.py). Every series exists from the first scrape at 0, so ``increase()`` sees
the first failure too; a restart of the exporter is a counter reset, which Prometheus handles.
Nothing is counted from the whole history: no scrape scans the attempt log.
Gauges are read afresh. A part that cannot be read (the database down, Ray unreachable) is left
out of that scrape and counted in ``variant_pipeline_scrape_errors_total{part}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.jobs import RECOVERY_REASON_TAG, job_pipeline_job, variant_pipeline_job
from variant_pipeline.config import Settings
from variant_pipeline.data import metrics as queries
from variant_pipeline.data.engine import Engine
from variant_pipeline.sensors.outbox import saved_outbox_cursor
from variant_pipeline.sensors.recovery import busy_partitions

log = logging.getLogger(__name__)

PREFIX = "variant_pipeline"
RECOVERY_REASONS = ("retry", "run_failed", "stalled")
LEVEL_OF_JOB = {variant_pipeline_job.name: "variant", job_pipeline_job.name: "job"}
QUEUED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
ATTEMPT_OUTCOMES = ("done", "failed", "lost", "superseded", "skipped")
# A variant fails at one of its stages; a job at one of its own, or where its last variant failed.
FAILURE_SERIES = [*(("variant", s.name) for s in stage_graph.VARIANT_STAGES),
                  *(("job", name) for name in stage_graph.STAGE_NAMES)]


@dataclass
class _Totals:
    """Running totals of what ended below ``read_below_xid`` (None: nothing read yet)."""

    read_below_xid: int | None = None
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, outcome)
    retries: Counter[str] = field(default_factory=Counter)  # stage
    buckets: dict[str, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * (len(queries.DURATION_BUCKETS_S) + 1)))
    seconds: Counter[str] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (level, stage) failed
    finished_jobs: int = 0

    def add_attempts(self, tallies: list[queries.AttemptTally]) -> None:
        for t in tallies:
            self.attempts[t.stage, t.outcome] += t.n
            if t.retry_scheduled:
                self.retries[t.stage] += t.n
            if t.bucket >= 0:
                self.buckets[t.stage][min(t.bucket, len(queries.DURATION_BUCKETS_S))] += t.n
                self.seconds[t.stage] += t.seconds

    def add_events(self, tallies: list[queries.EventTally]) -> None:
        for t in tallies:
            if t.new_status == "failed":
                self.failures[t.level, t.new_stage] += t.n
            elif t.level == "job" and t.new_status == "done" and t.new_stage == stage_graph.LAST_JOB_STAGE:
                self.finished_jobs += t.n


class PipelineCollector(Collector):
    """A ``prometheus_client`` collector: one consistent read of the pipeline per scrape."""

    def __init__(self, engine: Engine, instance: dg.DagsterInstance, settings: Settings,
                 replica_stats: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.engine = engine
        self.instance = instance
        self.settings = settings
        self.replica_stats = replica_stats  # None: the local backend, no replicas to report
        self._lock = threading.Lock()  # scrapes one at a time: the totals advance once per read
        self._totals = _Totals()
        self._errors: Counter[str] = Counter()

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.monotonic()
            metrics: list[Metric] = []
            for part, read in (("database", self._database), ("dagster", self._dagster), ("ray", self._ray)):
                try:
                    metrics.extend(read())
                except Exception as exc:  # one part down must not hide the others
                    self._errors[part] += 1
                    log.warning("metrics: could not read %s: %s", part, " ".join(str(exc).split())[:300])
            errors = CounterMetricFamily(f"{PREFIX}_scrape_errors", "Scrapes that could not read a part",
                                         labels=["part"])
            for part in ("database", "dagster", "ray"):
                errors.add_metric([part], self._errors[part])
            metrics.append(errors)
            metrics.append(GaugeMetricFamily(f"{PREFIX}_scrape_duration_seconds", "How long this scrape took",
                                             value=time.monotonic() - started))
        yield from metrics

    # --- PostgreSQL ---------------------------------------------------------------------------

    def _database(self) -> list[Metric]:
        with queries.read_only(self.engine) as conn:
            below = queries.oldest_in_flight_xid(conn)
            totals = self._totals
            first = totals.read_below_xid is None  # the first scrape only marks where counting starts
            attempts = [] if first else queries.attempt_tallies(conn, totals.read_below_xid, below)
            events = [] if first else queries.event_tallies(conn, totals.read_below_xid, below)
            states = queries.state_counts(conn)
            backlog = queries.outbox_backlog(conn, saved_outbox_cursor(self.instance))
            stuck = queries.stuck_candidates(conn, self.settings.stall_after_s)
            last_finish = queries.last_job_finished_at(conn)
            now = queries.database_now(conn)
        # Only once every read succeeded: a failed scrape leaves the totals where they were.
        totals.add_attempts(attempts)
        totals.add_events(events)
        totals.read_below_xid = below
        busy = busy_partitions(self.instance, set(LEVEL_OF_JOB))
        return [*self._state_metrics(states), *self._attempt_metrics(), *self._event_metrics(),
                GaugeMetricFamily(f"{PREFIX}_outbox_backlog_events",
                                  "Outbox events after the outbox sensor's saved cursor", value=backlog.events),
                GaugeMetricFamily(f"{PREFIX}_outbox_oldest_unread_age_seconds",
                                  "Age of the oldest outbox event the sensor has not read (0: none)",
                                  value=(now - backlog.oldest_created_at).total_seconds()
                                  if backlog.oldest_created_at else 0.0),
                self._stuck_metric(stuck, busy),
                GaugeMetricFamily(f"{PREFIX}_last_job_finished_timestamp_seconds",
                                  "When the last job finished (Unix time; 0: none yet)",
                                  value=last_finish.timestamp() if last_finish else 0.0)]

    def _state_metrics(self, states: list[queries.StateCount]) -> list[Metric]:
        families = {
            level: GaugeMetricFamily(f"{PREFIX}_{level}s", f"{level.capitalize()}s by (stage, status)",
                                     labels=["stage", "status"])
            for level in ("variant", "job")
        }
        unfinished = GaugeMetricFamily(f"{PREFIX}_unfinished", "Variants and jobs not yet done or failed",
                                       labels=["level"])
        last = {"variant": stage_graph.LAST_VARIANT_STAGE, "job": stage_graph.LAST_JOB_STAGE}
        waiting: Counter[str] = Counter()
        for s in states:
            families[s.level].add_metric([s.stage, s.status], s.n)
            if s.status != "failed" and not (s.status == "done" and s.stage == last[s.level]):
                waiting[s.level] += s.n
        for level in ("variant", "job"):
            unfinished.add_metric([level], waiting[level])
        return [*families.values(), unfinished]

    def _attempt_metrics(self) -> list[Metric]:
        totals = self._totals
        outcomes = CounterMetricFamily(f"{PREFIX}_stage_attempts", "Stage attempts that ended, by outcome",
                                       labels=["stage", "outcome"])
        for stage in stage_graph.STAGE_NAMES:
            for outcome in ATTEMPT_OUTCOMES:
                outcomes.add_metric([stage, outcome], totals.attempts[stage, outcome])
        retries = CounterMetricFamily(f"{PREFIX}_stage_retries_scheduled",
                                      "Failed or lost attempts after which another was scheduled", labels=["stage"])
        for stage in stage_graph.STAGE_NAMES:
            retries.add_metric([stage], totals.retries[stage])
        durations = HistogramMetricFamily(f"{PREFIX}_stage_attempt_duration_seconds",
                                          "Duration of stage attempts that ended done or failed", labels=["stage"])
        for stage in stage_graph.STAGE_NAMES:
            counts = totals.buckets[stage]
            cumulative, buckets = 0, []
            for bound, n in zip((*queries.DURATION_BUCKETS_S, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            durations.add_metric([stage], buckets, sum_value=totals.seconds[stage])
        return [outcomes, retries, durations]

    def _event_metrics(self) -> list[Metric]:
        totals = self._totals
        failures = CounterMetricFamily(f"{PREFIX}_failures", "Variants and jobs that ended failed, by stage",
                                       labels=["level", "stage"])
        for level, stage in FAILURE_SERIES:
            failures.add_metric([level, stage], totals.failures[level, stage])
        return [failures, CounterMetricFamily(f"{PREFIX}_jobs_finished", "Jobs that reached their last stage",
                                              value=totals.finished_jobs)]

    def _stuck_metric(self, candidates: list[tuple[str, str]], busy: set[str]) -> Metric:
        counts = Counter(level for level, key in candidates if key not in busy)
        stuck = GaugeMetricFamily(
            f"{PREFIX}_stuck", "Unfinished variants and jobs with no change for longer than the stall rule, "
            "no attempt in progress and no Dagster run queued or in progress", labels=["level"])
        for level in ("variant", "job"):
            stuck.add_metric([level], counts[level])
        return stuck

    # --- Dagster ------------------------------------------------------------------------------

    def _dagster(self) -> list[Metric]:
        runs = GaugeMetricFamily(f"{PREFIX}_dagster_runs", "Dagster runs queued and in progress",
                                 labels=["state"])
        runs.add_metric(["queued"], self.instance.get_runs_count(dg.RunsFilter(statuses=QUEUED)))
        runs.add_metric(["in_progress"], self.instance.get_runs_count(dg.RunsFilter(statuses=IN_PROGRESS)))
        restarts = CounterMetricFamily(f"{PREFIX}_recovery_restarts",
                                       "Runs the recovery sensor launched, by level and reason",
                                       labels=["level", "reason"])
        for job_name, level in LEVEL_OF_JOB.items():
            for reason in RECOVERY_REASONS:
                n = self.instance.get_runs_count(dg.RunsFilter(job_name=job_name, tags={RECOVERY_REASON_TAG: reason}))
                restarts.add_metric([level, reason], n)
        return [runs, restarts]

    # --- Ray Serve ----------------------------------------------------------------------------

    def _ray(self) -> list[Metric]:
        if self.replica_stats is None:
            return []
        stats = self.replica_stats()
        queue = GaugeMetricFamily(f"{PREFIX}_replica_queue_length", "Calls waiting in a model replica",
                                  labels=["family", "replica"])
        loads = CounterMetricFamily(f"{PREFIX}_replica_model_loads", "Model loads in a replica (1: loaded once)",
                                    labels=["family", "replica"])
        calls = CounterMetricFamily(f"{PREFIX}_replica_calls", "Calls a model replica answered",
                                    labels=["family", "replica"])
        starts = CounterMetricFamily(f"{PREFIX}_replica_starts", "Replicas started since the Ray head started",
                                     labels=["family"])
        batches = HistogramMetricFamily(f"{PREFIX}_replica_batch_size", "Calls per model call (batching)",
                                        labels=["family", "replica"])
        started: Counter[str] = Counter()
        for s in stats:
            labels = [s["family"], s["replica"]]
            started[s["family"]] += 1
            if not s.get("live", True):
                continue
            queue.add_metric(labels, s["queue_length"])
            loads.add_metric(labels, s["loads"])
            calls.add_metric(labels, s["calls"])
            sizes = {int(k): int(v) for k, v in s["batch_sizes"].items()}
            cumulative, buckets = 0, []
            for bound in (*BATCH_SIZE_BUCKETS, float("inf")):
                cumulative = sum(n for size, n in sizes.items() if size <= bound)
                buckets.append((_le(bound), cumulative))
            batches.add_metric(labels, buckets, sum_value=float(sum(size * n for size, n in sizes.items())))
        for family, n in sorted(started.items()):
            starts.add_metric([family], n)
        return [queue, loads, calls, starts, batches]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"


def build_collector(settings: Settings) -> PipelineCollector:
    """The collector for this deployment: its database, its Dagster instance, and with the ``ray``
    backend the replicas of the cluster runs use (connected on the first scrape)."""
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.sensors.retention import open_instance

    replica_stats = (lambda: ray_replica_stats(settings)) if settings.model_backend == "ray" else None
    return PipelineCollector(get_engine(), open_instance(), settings, replica_stats)


def ray_replica_stats(settings: Settings) -> list[dict[str, Any]]:
    """Every replica the cluster's stats actor knows, dead ones marked (for the starts counter)."""
    from variant_pipeline.models import ray_head, serving

    ray_head.connect(settings)
    return serving.replica_stats(include_dead=True)


def exposition(collector: PipelineCollector) -> str:
    """One scrape in the text format Prometheus reads (``metrics --once``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def serve(collector: PipelineCollector, host: str, port: int) -> Any:
    """Serve ``/metrics`` on ``host:port`` in a background thread; returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server

"""One Dagster asset per stage, built from the stage graph declaration.

The assets are thin: each builds a ``HandlerContext`` from its resources and calls
``execute_stage``, which claims the partition, runs the pure stage work, writes its outputs and
marks the stage done (or failed, with the reason) in PostgreSQL. The asset adds what people look
at in the UI: thumbnails, scores, the model used, latency and model loads in this run process.
The jobs that run them, and the run requests of the sensors, are in ``assets/jobs.py``.
"""


import dataclasses
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.checks import CHECK_SPECS, stage_check_results
from variant_pipeline.assets.jobs import LAUNCHED_BY_TAG, continues_attempts, launched_by_pipeline
from variant_pipeline.assets.partitions import JobVariantsPartitionMapping, job_partitions, variant_partitions
from variant_pipeline.assets.rendering import result_metadata
from variant_pipeline.config import load_settings
from variant_pipeline.data.locks import ClaimRefused
from variant_pipeline.handlers import HandlerContext, execute_stage
from variant_pipeline.models.registry import family, kinds_for, wants_accelerator
from variant_pipeline.state.attempts import RunIsStale, StageFailed, record_cancellation, stage_timeout_s
from variant_pipeline.state.origins import run_origin

# Stages of families that want the accelerator share this concurrency pool when their models run
# in the run process; with the ray backend Ray places the GPU replicas and no stage holds it.
GPU_POOL = "gpu"


class ResourceModels:
    """The handlers' view of the model resources of one asset execution.

    ``deadline`` (a ``time.monotonic()`` value) is the stage's time limit, handed to every model
    client so a served call is cancelled in Serve when it passes. The models handed out are kept,
    so the materialization can say which replica served the stage, and how.
    """

    def __init__(self, resources: Any, deadline: float | None = None) -> None:
        self._resources = resources
        self._deadline = deadline
        self.handed_out: list[Any] = []

    def _resource(self, name: str) -> Any:
        family(name)  # an unregistered name is a programming error, not a missing resource
        try:
            return getattr(self._resources, name)
        except AttributeError:
            raise RuntimeError(f"this stage did not declare the {name!r} resource") from None

    def get(self, name: str) -> Any:
        model = self._resource(name).get(deadline=self._deadline)
        self.handed_out.append(model)
        return model

    def serving_metadata(self) -> dict[str, Any]:
        """Backend, and for served calls the replica, batch size, queueing and replica loads."""
        calls = [c for m in self.handed_out for c in getattr(m, "calls", ())]
        metadata: dict[str, Any] = {"model_backend": load_settings().model_backend}
        if calls:
            metadata.update({
                "model_replica": ",".join(sorted({c.replica for c in calls})),
                "model_batch_size": max(c.batch_size for c in calls),
                "model_queued_s": round(sum(c.queued_s for c in calls), 4),
                "model_replica_loads": max(c.replica_loads for c in calls),
                "model_calls": [dataclasses.asdict(c) for c in calls],
            })
        return metadata

    def describe(self, name: str) -> str:
        return self._resource(name).location()


def job_gallery(ctx: HandlerContext) -> str:
    """Every variant of the job side by side with its scores, checks and the job's copy."""
    from variant_pipeline.data.results import job_results
    from variant_pipeline.gallery import markdown_gallery

    return markdown_gallery(job_results(ctx.engine, ctx.partition_key, ctx.settings, ctx.store), ctx.store)


def _cancel_requested(context: AssetExecutionContext) -> bool:
    run = context.instance.get_run_by_id(context.run.run_id)
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


def build_stage_asset(stage: stage_graph.Stage) -> dg.AssetsDefinition:
    previous = [s for s in stage_graph.STAGES if s.position == stage.position - 1]
    deps: list[dg.AssetDep] = []
    if previous:
        upstream = previous[0]
        mapping = JobVariantsPartitionMapping() if upstream.level != stage.level else None
        deps.append(dg.AssetDep(upstream.name, partition_mapping=mapping))
    # Every stage may need the brief's model: the job's brief (English copy, short Korean line) is
    # written lazily, once per job, by whichever stage first reads a missing text.
    resource_keys = {"database", "asset_storage", stage_graph.BRIEF_MODEL} | ({stage.model} if stage.model else set())
    partitions = variant_partitions if stage.level == "variant" else job_partitions
    # A one-asset multi_asset rather than @asset for two things @asset cannot say: the asset is
    # skippable (a stale launched run yields no materialization, and Dagster then skips the run's
    # later stages), and its checks are optional with it (can_subset), which also lets a person
    # run the checks alone: they are re-read from what the stage stored.
    spec = dg.AssetSpec(
        stage.name,
        description=stage.description,
        deps=deps,
        group_name=f"{stage.level}_stages",
        kinds=set(kinds_for(stage.model)),
        metadata={"stage_position": stage.position, "level": str(stage.level), "model_resource": stage.model or "none"},
        partitions_def=partitions,
        skippable=True,
    )

    @dg.multi_asset(
        name=stage.name,
        specs=[spec],
        partitions_def=partitions,
        pool=GPU_POOL if wants_accelerator(stage.model) and load_settings().model_backend == "local" else None,
        required_resource_keys=resource_keys,
        check_specs=CHECK_SPECS.get(stage.name),
        can_subset=True,
    )
    def _stage_asset(context: AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        import time

        resources = context.resources
        settings = load_settings()
        if dg.AssetKey(stage.name) not in context.selected_asset_keys:  # the checks alone
            yield from stage_check_results(resources.database.engine(), stage.name, context.partition_key, settings)
            return
        models = ResourceModels(resources, deadline=time.monotonic() + stage_timeout_s(settings, stage.name))
        ctx = HandlerContext(
            engine=resources.database.engine(),
            store=resources.asset_storage.store(),
            settings=settings,
            models=models,
            origin=run_origin(context.run.run_id),
            partition_key=context.partition_key,
            log=context.log.info,
            run_id=context.run.run_id,
            continues_attempts=continues_attempts(context.run.tags),
            launched=launched_by_pipeline(context.run.tags),
        )
        start = time.perf_counter()
        try:
            outcome = execute_stage(stage.name, ctx)
        except RunIsStale as exc:
            # Nothing was done: no materialization (the asset's latest one stays the real one), an
            # observation that says why, and Dagster skips this run's later stages.
            context.log_event(dg.AssetObservation(
                asset_key=stage.name, partition=context.partition_key,
                metadata={"skipped": str(exc), "run_launched_by": context.run.tags.get(LAUNCHED_BY_TAG, "")}))
            return
        except StageFailed as exc:
            # The reason is already stored on the row; the Dagster step fails with the same message.
            raise dg.Failure(description=str(exc),
                             metadata={"reason": exc.reason, "retry_scheduled": exc.will_retry}) from exc
        except ClaimRefused as exc:
            # Another run holds this partition, or took it over: this run wrote nothing.
            raise dg.Failure(description=f"{stage.name} not run for {context.partition_key}: {exc}") from exc
        except BaseException:
            # Interrupted. A person who cancels a run means it: the attempt fails for good (retry
            # by hand). A worker stopped any other way (the daemon shut down) is left to recovery.
            if _cancel_requested(context):
                record_cancellation(stage.name, ctx, f"cancelled: run {context.run.run_id} was cancelled in Dagster")
            raise
        metadata = result_metadata(outcome, time.perf_counter() - start, models.serving_metadata())
        if stage.name == stage_graph.LAST_JOB_STAGE:
            metadata["gallery"] = dg.MetadataValue.md(job_gallery(ctx))
        yield dg.MaterializeResult(
            asset_key=stage.name,
            metadata=metadata,
            check_results=stage_check_results(ctx.engine, stage.name, ctx.partition_key, ctx.settings),
        )

    return _stage_asset


STAGE_ASSETS: list[dg.AssetsDefinition] = [build_stage_asset(s) for s in stage_graph.STAGES]
VARIANT_ASSETS = [a for a, s in zip(STAGE_ASSETS, stage_graph.STAGES, strict=True) if s.level == "variant"]
JOB_ASSETS = [a for a, s in zip(STAGE_ASSETS, stage_graph.STAGES, strict=True) if s.level == "job"]

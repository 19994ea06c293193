"""Dynamic partitions: one per variant (job_variants_id) and one per job (job_id).

Job-level assets depend on exactly their own job's variant partitions. No built-in Dagster
partition mapping can say that for two dynamic partition sets, so ``JobVariantsPartitionMapping``
asks the system of record (``jobs_variants``) which variants belong to a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import dagster as dg

from variant_pipeline.assets.dagster_internals import (
    DynamicPartitionsStore,
    UpstreamPartitionsResult,
    partition_loading_context,
)

VARIANT_PARTITIONS_NAME = "job_variants"
JOB_PARTITIONS_NAME = "jobs"

variant_partitions = dg.DynamicPartitionsDefinition(name=VARIANT_PARTITIONS_NAME)
job_partitions = dg.DynamicPartitionsDefinition(name=JOB_PARTITIONS_NAME)


def variant_ids_of_jobs(job_ids: Sequence[str]) -> list[str]:
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import variant_ids_of_jobs as lookup

    return lookup(get_engine(), job_ids)


def job_ids_of_variants(variant_ids: Sequence[str]) -> list[str]:
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import job_ids_of_variants as lookup

    return lookup(get_engine(), variant_ids)


class JobVariantsPartitionMapping(
    dg.PartitionMapping, NamedTuple("_JobVariantsPartitionMapping", [])
):
    """A job partition depends on the partitions of that job's own variants, and nothing else."""

    def validate_partition_mapping(
        self,
        upstream_partitions_def: dg.PartitionsDefinition,
        downstream_partitions_def: dg.PartitionsDefinition | None,
    ) -> None:
        if upstream_partitions_def != variant_partitions or downstream_partitions_def != job_partitions:
            raise dg.DagsterInvalidDefinitionError(
                "JobVariantsPartitionMapping maps job partitions to variant partitions only"
            )

    def get_upstream_mapped_partitions_result_for_partitions(
        self,
        downstream_partitions_subset: dg.PartitionsSubset | None,
        downstream_partitions_def: dg.PartitionsDefinition | None,
        upstream_partitions_def: dg.PartitionsDefinition,
        current_time: datetime | None = None,
        dynamic_partitions_store: DynamicPartitionsStore | None = None,
    ) -> UpstreamPartitionsResult:
        with partition_loading_context(current_time, dynamic_partitions_store):
            job_ids = list(downstream_partitions_subset.get_partition_keys()) if downstream_partitions_subset else []
            wanted = variant_ids_of_jobs(job_ids)
            # Only the wanted keys, in one query: listing every live variant partition per call made
            # a page about one job cost more as partitions grew.
            existing = upstream_partitions_def.filter_valid_partition_keys(set(wanted))
            return UpstreamPartitionsResult(
                partitions_subset=upstream_partitions_def.subset_with_partition_keys(
                    [k for k in wanted if k in existing]
                ),
                required_but_nonexistent_subset=upstream_partitions_def.empty_subset().with_partition_keys(
                    [k for k in wanted if k not in existing]
                ),
            )

    def get_downstream_partitions_for_partitions(
        self,
        upstream_partitions_subset: dg.PartitionsSubset,
        upstream_partitions_def: dg.PartitionsDefinition,
        downstream_partitions_def: dg.PartitionsDefinition,
        current_time: datetime | None = None,
        dynamic_partitions_store: DynamicPartitionsStore | None = None,
    ) -> dg.PartitionsSubset:
        with partition_loading_context(current_time, dynamic_partitions_store):
            job_ids = job_ids_of_variants(list(upstream_partitions_subset.get_partition_keys()))
            existing = downstream_partitions_def.filter_valid_partition_keys(set(job_ids))
            return downstream_partitions_def.subset_with_partition_keys([j for j in job_ids if j in existing])

    @property
    def description(self) -> str:
        return "Each job partition depends on the variant partitions of that job (from jobs_variants)."

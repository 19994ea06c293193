"""Database and asset-file resources."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from variant_pipeline.config import load_settings
from variant_pipeline.data.engine import Engine
from variant_pipeline.data.storage import AssetStore


class DatabaseResource(dg.ConfigurableResource):
    """The application database. Empty ``url``: DATABASE_URL, else the embedded server.

    While a run uses it, the run holds its lease (``state.locks.RunLease``): how the recovery sensor
    tells a live run worker from a killed one.
    """

    url: str = ""
    _lease: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.run_id:
            from variant_pipeline.data.locks import RunLease

            self._lease = RunLease(self.engine(), context.run_id, load_settings().lease_timeout_s)
            self._lease.acquire()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def engine(self) -> Engine:
        from variant_pipeline.data.engine import get_engine

        return get_engine(self.url or None)


class AssetStorageResource(dg.ConfigurableResource):
    """Image files, per tenant, under one root (a directory or s3://bucket/prefix). Empty ``root``:
    VP_ASSET_ROOT; the S3 endpoint and credentials always come from the settings."""

    root: str = ""

    def store(self) -> AssetStore:
        settings = load_settings()
        return AssetStore(self.root, settings.s3) if self.root else AssetStore.from_settings(settings)

"""Database and asset-file resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from sqlalchemy.engine import Engine

from variant_pipeline.config import load_settings
from variant_pipeline.storage import AssetStore


class DatabaseResource(dg.ConfigurableResource):
    """The application database. Empty ``url``: DATABASE_URL, else the embedded server."""

    url: str = ""

    def engine(self) -> Engine:
        from variant_pipeline.db import get_engine

        return get_engine(self.url or None)


class AssetStorageResource(dg.ConfigurableResource):
    """Image files, per tenant, under one root. Empty ``root``: the configured assets dir."""

    root: str = ""

    def store(self) -> AssetStore:
        return AssetStore(Path(self.root) if self.root else load_settings().assets_dir)

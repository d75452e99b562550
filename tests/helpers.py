"""Helpers the test packages share."""

from __future__ import annotations

from typing import Any

from batch.tables import register_dataset
from cxd.catalog import SourceSpec, parse_source, save_source


def declare_source(stores, body: dict[str, Any]) -> SourceSpec:
    """Declare a source like one ``cxd.yml`` entry, create its tables, return its spec."""
    from query_router.router import forget_catalog

    spec = parse_source(body)
    save_source(stores.db, spec)
    register_dataset(stores.db, spec)
    forget_catalog()  # the router trusts its copy of the catalog for a second
    return spec

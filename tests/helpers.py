"""Helpers the test packages share."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
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


def eventually(check, timeout: float = 15.0, what="condition", interval: float = 0.05):
    """Poll ``check()`` until it returns something truthy and return it; else fail naming
    ``what`` (a string, or a callable giving one when the time is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    said = what() if callable(what) else what
    raise AssertionError(f"{said} not reached within {timeout}s (last: {check()!r})")


def child_pids(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (rq work horses, gunicorn workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found

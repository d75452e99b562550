"""Console actions on a source: each calls the batch layer's own function.

Backfill, reprocess and pause/resume come from the batch layer; where this build lacks
one, the action says so instead of guessing (``Missing``), so the button still
explains itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from batch.jobs import enqueue_run
from batch.schedule import entry_ids, register_schedules, scheduler
from cxd.catalog import get_source
from cxd.errors import BadInput, CxdError
from cxd.stores import Stores


class Missing(CxdError):
    """The backend function behind an action is not part of this build."""

    code = "not_implemented"
    status = 501


def backend(module: str, name: str) -> Callable[..., Any]:
    """``module.name`` if this build has it; Missing names what is absent otherwise."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise Missing(
            f"this build of cxd has no {module}.{name}; the action needs a newer batch layer"
        ) from None


def run_now(stores: Stores, dataset: str, mode: str = "incremental") -> str:
    """Queue an incremental run (or a full refresh with ``mode="full"``)."""
    run_id = enqueue_run(stores, dataset, mode)
    return f"queued {'full refresh' if mode == 'full' else 'run'} #{run_id} of {dataset}"


def backfill(stores: Stores, dataset: str, start: str, end: str) -> str:
    """Queue a backfill of ``[start, end)`` (``batch.jobs.enqueue_backfill``)."""
    if not start or not end:
        raise BadInput("a backfill needs both a from and a to date")
    run_id = backend("batch.jobs", "enqueue_backfill")(stores, dataset, start, end)
    return f"queued backfill #{run_id} of {dataset} from {start} to {end}"


def reprocess(stores: Stores, dataset: str) -> str:
    """Queue a re-ingest from the archive (``batch.jobs.enqueue_reprocess``)."""
    run_id = backend("batch.jobs", "enqueue_reprocess")(stores, dataset)
    return f"queued reprocess #{run_id} of {dataset} from its archive"


def set_paused(stores: Stores, dataset: str, paused: bool) -> str:
    """Pause or resume a source's schedule.

    Uses ``batch.schedule.pause_schedule`` / ``resume_schedule`` when the batch layer
    has them; otherwise sets ``cxd.sources.paused`` and removes or re-adds the
    rq-scheduler entries itself.
    """
    name = "pause_schedule" if paused else "resume_schedule"
    try:
        backend("batch.schedule", name)(stores, dataset)
    except Missing:
        spec = get_source(stores.db, dataset)
        stores.db.execute(
            "UPDATE cxd.sources SET paused = %s, updated_at = now() WHERE name = %s",
            (paused, dataset),
        )
        if paused:
            sch = scheduler(stores)
            for job_id in entry_ids(spec):
                sch.cancel(job_id)
        else:
            register_schedules(stores, [spec])
    return f"{'paused' if paused else 'resumed'} the schedule of {dataset}"

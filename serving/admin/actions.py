"""Console actions on a source: each calls the batch layer's own function."""

from __future__ import annotations

from batch.jobs import enqueue_backfill, enqueue_reprocess, enqueue_run
from batch.schedule import pause_schedule, resume_schedule
from cxd.errors import BadInput
from cxd.stores import Stores


def run_now(stores: Stores, dataset: str, mode: str = "incremental") -> str:
    """Queue an incremental run (or a full refresh with ``mode="full"``)."""
    run_id = enqueue_run(stores, dataset, mode)
    return f"queued {'full refresh' if mode == 'full' else 'run'} #{run_id} of {dataset}"


def backfill(stores: Stores, dataset: str, start: str, end: str) -> str:
    """Queue a backfill of ``[start, end)``; the incremental cursor does not move."""
    if not start or not end:
        raise BadInput("a backfill needs both a from and a to date")
    run_id = enqueue_backfill(stores, dataset, start, end)
    return f"queued backfill #{run_id} of {dataset} from {start} to {end}"


def reprocess(stores: Stores, dataset: str) -> str:
    """Queue a re-ingest from the archive, without touching the source."""
    run_id = enqueue_reprocess(stores, dataset)
    return f"queued reprocess #{run_id} of {dataset} from its archive"


def set_paused(stores: Stores, dataset: str, paused: bool) -> str:
    """Pause or resume a source's schedule."""
    (pause_schedule if paused else resume_schedule)(stores, dataset)
    return f"{'paused' if paused else 'resumed'} the schedule of {dataset}"

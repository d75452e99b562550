"""rq jobs of the batch layer: one run of a source = fetch, archive, ingest, load."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from rq import Queue

from batch import runs
from batch.load import get_watermark, load_rows, to_frame
from batch.tables import register_dataset
from cxd.catalog import get_source
from cxd.errors import CxdError
from cxd.stores import Stores, process_stores
from plugins.exceptions import PayloadQuarantined
from plugins.registry import plugin_for

log = logging.getLogger(__name__)

QUEUE = "cxd-batch"
MODES = ("incremental", "full")


def queue(stores: Stores) -> Queue:
    """The rq queue batch runs go to."""
    return Queue(QUEUE, connection=stores.redis)


def enqueue_run(stores: Stores, dataset: str, mode: str = "incremental") -> int:
    """Record a queued run of ``dataset`` and enqueue its job; return the run id."""
    if mode not in MODES:
        from cxd.errors import BadInput

        raise BadInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    get_source(stores.db, dataset)  # NotFound for an unknown dataset
    run_id = runs.create_run(stores.db, dataset, mode)
    job = queue(stores).enqueue(run_job, run_id, job_id=f"cxd-run-{run_id}", job_timeout=3600)
    runs.update_run(stores.db, run_id, job_id=job.id)
    return run_id


def run_job(run_id: int) -> dict[str, Any]:
    """rq entry point: execute run ``run_id`` with this worker's stores."""
    return execute_run(process_stores(), run_id)


def execute_run(stores: Stores, run_id: int) -> dict[str, Any]:
    """Fetch, ingest and load one run; record every step. Returns the run record."""
    db = stores.db
    run = runs.get_run(db, run_id)
    step = "setup"
    started = time.monotonic()
    try:
        spec = get_source(db, run["dataset"])
        plugin = plugin_for(spec, stores.settings.plugin_dir)
        register_dataset(db, spec)
        cursor = None if run["mode"] == "full" else get_watermark(db, spec.name).get("cursor")
        step = "fetch"
        runs.update_run(db, run_id, "fetching")
        payloads = list(plugin.fetch(cursor))
        runs.log_run(db, run_id, "fetched", payloads=len(payloads))
        step = "ingest"
        runs.update_run(db, run_id, "ingesting")
        frames = []
        for p in payloads:
            try:
                frames.append(to_frame(spec, plugin.ingest(p)))
            except PayloadQuarantined as exc:  # a bad file is set aside, the rest load
                runs.log_run(db, run_id, "payload quarantined", payload=p.name, reason=exc.message)
        frame = pd.concat(frames, ignore_index=True) if frames else to_frame(spec, [])
        step = "load"
        loaded = load_rows(
            db, spec, frame, run_id=run_id, cursor=plugin.next_cursor(cursor, payloads)
        )
        plugin.after_load(payloads)
        runs.update_run(db, run_id, "succeeded", rows_fetched=len(frame), rows_loaded=loaded)
        runs.log_run(
            db, run_id, "loaded", rows=loaded, seconds=round(time.monotonic() - started, 3)
        )
    except Exception as exc:
        message = exc.message if isinstance(exc, CxdError) else f"{type(exc).__name__}: {exc}"
        log.warning("run %s of %s failed at %s: %s", run_id, run["dataset"], step, message)
        runs.fail_run(db, run_id, step, message)
    return runs.get_run(db, run_id)

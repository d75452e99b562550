"""rq jobs of the batch layer: one run of a source = fetch, archive, ingest, check, load.

A run is recorded from queued to succeeded or failed (see :mod:`batch.runs`). While a
process executes a run it holds a Postgres advisory lock on the run id; a worker killed
with SIGKILL loses its connection and so the lock (and its open load transaction, which
rolls back). :func:`recover` finds such orphaned runs and enqueues them again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg2
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job

from batch import archive, runs
from batch.load import _KEEP, Chunk, LoadResult, get_watermark, load
from batch.partitions import drop_expired
from batch.tables import register_dataset, unique_columns
from cxd.catalog import get_source
from cxd.errors import BadInput, CxdError, TransientError
from cxd.stores import Stores, process_stores
from plugins.base import Payload, SourcePlugin
from plugins.exceptions import FetchError, PayloadQuarantined
from plugins.registry import plugin_for

log = logging.getLogger(__name__)

QUEUE = "cxd-batch"
MODES = ("incremental", "full", "backfill", "reprocess")
_LOCK_CLASS = 0x0C7D  # advisory lock namespace of running runs
_DATASET_LOCK_CLASS = 0x0C7E  # advisory lock namespace of datasets with a run executing
DEFAULT_BACKOFF = "10,60,300"
STARTED_GRACE = 60  # seconds a dequeued job may take to mark its run before it counts as lost
RECOVER_EVERY = 30  # cxd-ingest keeper rounds (about a second each) between sweeps


def queue(stores: Stores) -> Queue:
    """The rq queue batch runs go to."""
    return Queue(QUEUE, connection=stores.redis)


def backoff() -> list[int]:
    """Seconds to wait before each retry of a transient fetch error (``CXD_RETRY_BACKOFF``)."""
    raw = os.environ.get("CXD_RETRY_BACKOFF", DEFAULT_BACKOFF)
    try:
        return [int(float(x)) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"CXD_RETRY_BACKOFF={raw!r}: expected seconds like 10,60,300") from None


def job_id(run_id: int, recovery: str = "") -> str:
    """The rq job id of a run (a run is one per schedule slot); a run enqueued again after
    its worker died gets a new id, so rq's own clean-up of the dead job cannot touch it."""
    return f"cxd-run-{run_id}" + (f"-r{recovery}" if recovery else "")


def enqueue_run(
    stores: Stores,
    dataset: str,
    mode: str = "incremental",
    *,
    slot: str | None = None,
    params: dict[str, Any] | None = None,
) -> int | None:
    """Record a queued run of ``dataset`` and enqueue its job; return the run id.

    With ``slot`` (a schedule's fire time), a second call for the same (dataset, mode,
    slot) enqueues nothing and returns None: a slot never runs twice.
    """
    if mode not in MODES:
        raise BadInput(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    get_source(stores.db, dataset)  # NotFound for an unknown dataset
    run_id = runs.create_run(stores.db, dataset, mode, slot=slot, params=params)
    if run_id is None:
        log.info("run of %s (%s) for slot %s exists already; not enqueued", dataset, mode, slot)
        return None
    _enqueue(stores, run_id)
    return run_id


def enqueue_backfill(stores: Stores, dataset: str, start: str, end: str) -> int:
    """Queue a backfill of ``[start, end)`` (ISO 8601 times); the cursor does not move."""
    params = {"from": start, "to": end}
    _time_range(params)  # a readable error before anything is recorded
    return enqueue_run(stores, dataset, "backfill", params=params)


def enqueue_reprocess(stores: Stores, dataset: str, run: int | None = None) -> int:
    """Queue a re-ingest of ``dataset`` from its archive (of one ``run``, or all)."""
    return enqueue_run(stores, dataset, "reprocess", params={"run": run} if run else None)


def _enqueue(stores: Stores, run_id: int, recovery: str = "") -> None:
    waits = backoff()
    jid = job_id(run_id, recovery)
    queue(stores).enqueue(
        run_job,
        run_id,
        job_id=jid,
        job_timeout=3600,
        retry=Retry(max=len(waits), interval=waits) if waits else None,
        result_ttl=3600,
        failure_ttl=86400,
    )
    runs.update_run(stores.db, run_id, job_id=jid)


def run_job(run_id: int) -> dict[str, Any]:
    """rq entry point: execute run ``run_id`` with this worker's stores."""
    from rq import get_current_job

    job = get_current_job()
    retries_left = (job.retries_left or 0) if job else 0
    run = execute_run(_worker_stores(), run_id, retry_transient=retries_left > 0)
    return {k: run[k] for k in ("id", "status", "rows_loaded", "error")}


def _worker_stores() -> Stores:
    """This process's stores, with today's settings (home, plugin folder) and a live pool."""
    from cxd.config import load_settings

    cached = process_stores()
    settings = load_settings().with_urls(cached.settings.database_url, cached.settings.redis_url)
    for _ in range(32):  # pooled connections Postgres dropped (restart) are discarded one by one
        try:
            cached.db.execute("SELECT 1")
            break
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            continue
    return Stores(settings=settings, db=cached.db, redis=cached.redis)


@contextlib.contextmanager
def _run_lock(db, run_id: int) -> Iterator[tuple[bool, Any]]:
    """Hold the advisory lock of ``run_id`` for the block; yields whether it was got (False
    if someone has it) and a cursor of the connection holding it, for :func:`_dataset_lock`."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, run_id))
        got = cur.fetchone()[0]
        conn.commit()
        try:
            yield got, cur
        finally:
            if got:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, run_id))


@contextlib.contextmanager
def _dataset_lock(cur, dataset: str) -> Iterator[None]:
    """Hold ``dataset``'s lock for the block, waiting while another run of it holds it.

    Runs of one dataset execute one at a time: two incremental runs (two slots whose runs
    overlap, two workers) would otherwise fetch from the same cursor and load the same
    rows twice. Taken on the run lock's connection (``cur``), so a run holds one idle
    connection for both; a killed process's locks go with it.
    """
    cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_DATASET_LOCK_CLASS, dataset))
    cur.connection.commit()
    try:
        yield
    finally:
        cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_DATASET_LOCK_CLASS, dataset))
        cur.connection.commit()


class _Steps:
    """The step a run is in, and how long each took (ms)."""

    def __init__(self):
        self.name = "setup"
        self.failed_in: str | None = None  # ingest or load, while both interleave
        self.durations: dict[str, int] = {}
        self._since = time.monotonic()

    def enter(self, name: str) -> None:
        """Close the running step's clock and start ``name``."""
        now = time.monotonic()
        self.durations[self.name] = self.durations.get(self.name, 0) + int(
            1000 * (now - self._since)
        )
        self.name, self._since = name, now

    def finish(self) -> None:
        """Close the running step's clock, keeping its name (the step a failure names)."""
        current = self.name
        self.enter(current)


def execute_run(
    stores: Stores,
    run_id: int,
    *,
    retry_transient: bool = False,
    on_progress: Callable[[LoadResult], None] | None = None,
) -> dict[str, Any]:
    """Fetch (or read the archive), ingest, check and load one run; record every step.

    Returns the run record. A TransientError while fetching re-raises when
    ``retry_transient`` (rq then retries the job with backoff) after putting the run back
    to queued; otherwise the run fails naming the step and the cause.
    """
    db = stores.db
    with _run_lock(db, run_id) as (mine, lock_cur):
        run = runs.get_run(db, run_id)
        if not mine or run["status"] in ("succeeded", "failed"):
            log.info("run %s is %s elsewhere; skipped", run_id, "running" if not mine else "done")
            return run
        with _dataset_lock(lock_cur, run["dataset"]):
            _execute_locked(stores, run, retry_transient, on_progress)
    return runs.get_run(db, run_id)


def _execute_locked(stores: Stores, run: dict[str, Any], retry_transient: bool, on_progress):
    db, run_id = stores.db, run["id"]
    db.execute("UPDATE cxd.runs SET attempts = attempts + 1 WHERE id = %s", (run_id,))
    steps = _Steps()
    started = time.monotonic()
    try:
        result = _execute(stores, run, steps, on_progress)
    except TransientError as exc:
        steps.finish()
        if retry_transient:
            runs.log_run(
                db,
                run_id,
                "transient error, retrying",
                step=steps_name(steps),
                error=exc.message,
            )
            runs.update_run(db, run_id, "queued")
            raise
        _fail(db, run, steps, exc, started)
    except Exception as exc:
        steps.finish()
        _fail(db, run, steps, exc, started)
    else:
        steps.finish()
        runs.update_run(
            db,
            run_id,
            "succeeded",
            rows_fetched=result.received,
            rows_loaded=result.loaded,
            rows_quarantined=result.quarantined,
            duration_ms=int(1000 * (time.monotonic() - started)),
            durations=_durations(steps, result.timings),
        )
        runs.log_run(
            db,
            run_id,
            "loaded",
            rows=result.loaded,
            quarantined=result.quarantined,
            out_of_range=result.out_of_range,
            seconds=round(time.monotonic() - started, 3),
        )
        _after_success(stores, run, result)


def steps_name(steps: _Steps) -> str:
    """The step that was running when the run stopped."""
    if steps.name == "ingest" and steps.failed_in:
        return steps.failed_in
    return steps.name


def _durations(steps: _Steps, load_timings: dict[str, int] | None = None) -> str:
    import json

    return json.dumps(
        {**steps.durations, **{f"load_{k}": v for k, v in (load_timings or {}).items()}}
    )


def _fail(db, run: dict[str, Any], steps: _Steps, exc: Exception, started: float) -> None:
    message = exc.message if isinstance(exc, CxdError) else f"{type(exc).__name__}: {exc}"
    step = steps_name(steps)
    message = f"source {run['dataset']!r}, run {run['id']}, step {step}: {message}"
    log.warning("%s", message)
    runs.fail_run(db, run["id"], step, message)
    runs.update_run(
        db,
        run["id"],
        duration_ms=int(1000 * (time.monotonic() - started)),
        durations=_durations(steps),
    )


def _after_success(stores: Stores, run: dict[str, Any], result: LoadResult) -> None:
    spec = get_source(stores.db, run["dataset"])
    try:
        archive.prune(stores.db, spec)
        drop_expired(stores.db, spec)
    except Exception:  # housekeeping never fails a loaded run
        log.exception("retention of %s failed", spec.name)
    if result.loaded:
        from speed.keys import notify_channel

        stores.redis.publish(notify_channel(spec.name), "batch")


def _previous_rows(db, dataset: str, mode: str, run_id: int) -> int | None:
    row = db.fetchone(
        "SELECT rows_fetched FROM cxd.runs WHERE dataset = %s AND mode = %s AND status = 'succeeded'"
        " AND id <> %s ORDER BY id DESC LIMIT 1",
        (dataset, mode, run_id),
    )
    return int(row["rows_fetched"]) if row else None


def _time_range(params: dict[str, Any]) -> tuple[datetime, datetime]:
    try:
        return (
            datetime.fromisoformat(str(params["from"]).replace("Z", "+00:00")),
            datetime.fromisoformat(str(params["to"]).replace("Z", "+00:00")),
        )
    except (KeyError, ValueError) as exc:
        raise BadInput(f"backfill needs from and to as ISO 8601 times: {exc}") from None


def _execute(stores: Stores, run: dict[str, Any], steps: _Steps, on_progress) -> LoadResult:
    db, run_id, mode = stores.db, run["id"], run["mode"]
    params = run.get("params") or {}
    spec = get_source(db, run["dataset"])
    plugin = plugin_for(spec, stores.settings.plugin_dir)
    register_dataset(db, spec)
    time_range = _time_range(params) if mode == "backfill" else None
    cursor: Any = None
    steps.enter("fetch")
    runs.update_run(db, run_id, "fetching")
    if mode == "reprocess":
        payloads = _reprocess_payloads(db, spec, params.get("run"))
    else:
        if mode == "incremental":
            cursor = get_watermark(db, spec.name).get("cursor")
        payloads = _fetch(stores, spec.name, run_id, plugin, cursor, time_range)
    runs.log_run(
        db, run_id, "fetched", payloads=len(payloads), bytes=sum(len(p.content) for p in payloads)
    )
    steps.enter("ingest")
    runs.update_run(db, run_id, "ingesting")
    new_cursor = _KEEP
    if mode in ("incremental", "full"):
        new_cursor = plugin.next_cursor(cursor, payloads)

    def set_aside(payload: Payload, reason: str) -> None:
        runs.log_run(db, run_id, "payload quarantined", payload=payload.name, reason=reason)

    result = load(
        db,
        spec,
        _chunks(plugin, payloads, steps, reprocess=mode == "reprocess", set_aside=set_aside),
        run_id=run_id,
        cursor=new_cursor,
        mode=mode,
        time_range=time_range,
        previous_rows=_previous_rows(db, spec.name, mode, run_id),
        on_progress=on_progress,
    )
    if mode != "reprocess":
        plugin.after_load(payloads)  # committed: e.g. the file plugin moves its files to done/
    return result


def _reprocess_payloads(db, spec, run: int | None) -> list[Payload]:
    """The archived payloads a reprocess re-ingests (of ``run``, or of every run).

    For a dataset without a key, the reprocess replaces the rows each of those runs
    loaded, so only runs whose rows are in raw qualify: runs that succeeded (a failed run
    loaded nothing, and a later run fetched its data again from the unmoved cursor), from
    the latest successful full refresh on (it replaced every earlier run's rows).
    Re-ingesting the others would load their rows a second time.
    """
    keyless = spec.kind != "point_in_time" and not unique_columns(spec)
    if keyless and run:
        record = db.fetchone(
            "SELECT status FROM cxd.runs WHERE id = %s AND dataset = %s", (run, spec.name)
        )
        if record and record["status"] == "failed":
            raise BadInput(
                f"run {run} of {spec.name!r} failed: it loaded nothing (a later run fetched"
                " its data again), so reprocessing it would load rows twice"
            )
        if record and record["status"] != "succeeded":
            raise BadInput(f"run {run} of {spec.name!r} has not finished; reprocess it after")
        full = _latest_full(db, spec.name)
        if record and full and run < full:
            raise BadInput(
                f"run {run} of {spec.name!r} was superseded by the full refresh run {full}:"
                f" its rows are no longer in raw; reprocess run {full} or the whole dataset"
            )
    if keyless and not run:
        entries = db.fetchall(
            "SELECT a.* FROM cxd.archive a JOIN cxd.runs r ON r.id = a.run_id"
            " WHERE a.dataset = %s AND r.status = 'succeeded' AND r.id >= %s ORDER BY a.id",
            (spec.name, _latest_full(db, spec.name) or 0),
        )
        payloads = [archive.read(entry) for entry in entries]
    else:
        payloads = list(archive.payloads(db, spec.name, run))
    if not payloads:
        which = f"run {run}" if run else "any run"
        raise BadInput(f"nothing archived for {spec.name!r} from {which}; nothing to reprocess")
    return payloads


def _latest_full(db, dataset: str) -> int | None:
    row = db.fetchone(
        "SELECT max(id) AS id FROM cxd.runs WHERE dataset = %s AND mode = 'full'"
        " AND status = 'succeeded'",
        (dataset,),
    )
    return row["id"] if row else None


def _fetch(stores: Stores, dataset: str, run_id: int, plugin: SourcePlugin, cursor, time_range):
    """Every payload of the fetch, each archived as received before anything reads it."""
    fetched = plugin.fetch_range(*time_range) if time_range else plugin.fetch(cursor)
    payloads = []
    try:
        for payload in fetched:
            archive.store(stores.db, stores.settings.home, dataset, run_id, payload)
            payloads.append(payload)
    except OSError as exc:  # connection refused, DNS, timeouts: the source is unreachable now
        raise FetchError(f"the source is unreachable: {exc}") from exc
    return payloads


def _chunks(
    plugin: SourcePlugin, payloads: list[Payload], steps: _Steps, *, reprocess: bool, set_aside
):
    """Ingest output of every payload as load chunks (an ingest may yield several frames).

    A payload the plugin sets aside (PayloadQuarantined: a file it cannot parse) is
    reported through ``set_aside`` and skipped; the other payloads still load. On
    reprocess each payload first yields an empty chunk naming its run, so that run's rows
    are replaced even when the ingest now makes no row of it.
    """
    for payload in payloads:
        origin = payload.meta.get("run_id") if reprocess else None
        position = 0
        steps.failed_in = "ingest"
        try:
            out = plugin.ingest(payload)
        except PayloadQuarantined as exc:
            set_aside(payload, exc.message)
            out = None
        if origin is not None:
            # names the run whose rows this load replaces, even if no row comes out now
            steps.failed_in = "load"
            yield Chunk([], media_type=payload.media_type, origin_run=origin)
            steps.failed_in = "ingest"
        if out is None:
            continue
        pieces = [out] if isinstance(out, pd.DataFrame | list | tuple) else out
        for piece in _guarded(pieces, steps):
            steps.failed_in = "load"
            n = len(piece)
            yield Chunk(
                piece, media_type=payload.media_type, first_position=position, origin_run=origin
            )
            position += n
            steps.failed_in = "ingest"
        steps.failed_in = "load"


def _guarded(pieces, steps: _Steps):
    iterator = iter(pieces)
    while True:
        steps.failed_in = "ingest"
        try:
            piece = next(iterator)
        except StopIteration:
            return
        yield piece


def recover(stores: Stores) -> list[int]:
    """Enqueue again every run left behind by a dead worker; return their ids.

    A run in fetching or ingesting (or queued without a job in the queue, or recorded
    but never given a job because the process enqueuing it died) whose advisory lock is
    free has no live process: its load transaction rolled back with the connection, so
    running it again loads it exactly once.
    """
    db = stores.db
    q = queue(stores)
    queued_ids = set(q.get_job_ids())
    recovered = []
    for run in db.fetchall(
        "SELECT id, status, job_id, attempts,"
        " queued_at < now() - make_interval(secs => %s) AS stale"
        " FROM cxd.runs WHERE status IN ('queued', 'fetching', 'ingesting') ORDER BY id",
        (STARTED_GRACE,),
    ):
        if run["status"] == "queued" and run["job_id"] in queued_ids:
            continue
        if run["status"] == "queued" and run["job_id"] is None and not run["stale"]:
            continue  # being enqueued now; one left without a job (its enqueuer died) is stale
        with _run_lock(db, run["id"]) as (free, _):
            if not free:
                continue  # a live process is executing it
            current = runs.get_run(db, run["id"])
            if current["status"] not in ("queued", "fetching", "ingesting"):
                continue
            if current["status"] == "queued" and _job_pending(
                stores, current["job_id"], queued_ids
            ):
                continue
            if current["job_id"]:
                with contextlib.suppress(NoSuchJobError):
                    Job.fetch(current["job_id"], connection=stores.redis).delete()
            runs.update_run(db, run["id"], "queued")
            runs.log_run(db, run["id"], "recovered after its worker died", was=current["status"])
            _enqueue(stores, run["id"], recovery=uuid.uuid4().hex[:8])
            recovered.append(run["id"])
    if recovered:
        log.warning("re-enqueued %d run(s) left by dead workers: %s", len(recovered), recovered)
    return recovered


def _worker_dead(stores: Stores, name: str | None) -> bool:
    """True when the rq worker ``name`` ran on this host and its process is gone."""
    import socket

    from rq import Worker

    if not name:
        return False
    worker = Worker.find_by_key(
        Worker.redis_worker_namespace_prefix + name, connection=stores.redis
    )
    if worker is None or not worker.pid or worker.hostname != socket.gethostname():
        return False  # another host's worker: wait for the grace period instead
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _job_pending(stores: Stores, jid: str | None, queued_ids: set[str]) -> bool:
    """True while rq may still run the job by itself: in the queue, scheduled for a retry,
    or just taken by a live worker that has not yet marked the run.

    A job whose hash says queued but which is in no queue was being dequeued by a worker
    that died. Recovering a run twice is harmless: only one process can hold its lock, and
    a finished run is never executed again.
    """
    if jid in queued_ids:
        return True
    if not jid:
        return False
    try:
        job = Job.fetch(jid, connection=stores.redis)
    except NoSuchJobError:
        return False
    status = str(getattr(job.get_status(refresh=True), "value", job.get_status()))
    if status == "started":
        if _worker_dead(stores, job.worker_name):
            return False
        started = job.started_at
        if started is None:
            return True
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        return datetime.now(UTC) - started < timedelta(seconds=STARTED_GRACE)
    return status in ("scheduled", "deferred")

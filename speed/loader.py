"""Hand-off: events above the batch watermark W go into raw exactly once.

The loader reads a dataset's stream through the consumer group ``cxd-loader`` and, for
each batch, commits the rows (with their ``_stream_id``) together with the new W in one
Postgres transaction (:func:`batch.load.load_rows`); only then does it XACK them, and it
trims the stream only below the committed W minus a grace period (invariant 2).

Exactly once, whatever dies when:

- One loader per dataset at a time: a Postgres advisory lock (released by Postgres when
  the loader's connection drops, e.g. on kill -9) keeps loads in stream order, so W always
  means "every event up to W is in raw".
- At the start of a round the loader takes over every pending entry (XAUTOCLAIM): while
  it holds the lock, any other consumer's pending entries belong to a dead loader.
- Postgres decides: entries with id <= W are already committed and are only acknowledged,
  never loaded again (the loader may have died between commit and XACK).
- A batch Postgres rejects is split in halves until the failing event is found; events
  before it load. An event that fails ``max_failures`` times goes to the dead-letter stream
  ``cxd:{ds}:dead`` with the reason, is logged in ``cxd.speed_log``, and W moves past it.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd
import psycopg2
import redis

from batch.exceptions import LoadError
from batch.load import get_watermark, load_rows
from cxd.catalog import SourceSpec, get_source, list_sources, parse_duration
from cxd.stores import Stores, process_stores
from speed.exceptions import PoisonEvent
from speed.keys import (
    LOADER_GROUP,
    backlog_key,
    dead_ids_key,
    dead_key,
    failures_key,
    log_key,
    notify_channel,
)
from speed.stream import parse_id, speed_options

log = logging.getLogger(__name__)

QUEUE = "cxd-speed"
SCHEDULE_ID = "cxd-speed-load"
LIVE_TYPES = ("webhook", "mqtt")
_LOCK_CLASS = 0x0C7D0200
_FORGET_AFTER_MS = 10_000
# errors that belong to an event (bad JSON, a value Postgres cannot take), not to the moment
_POISON = (
    PoisonEvent,
    LoadError,
    psycopg2.DataError,
    psycopg2.IntegrityError,
    ValueError,
    TypeError,
)

# the ids come as one space-separated string: packing thousands of arguments costs the
# client more than splitting them costs Redis
_ACK = """
local ids = {}
for id in string.gmatch(ARGV[2], '%S+') do ids[#ids + 1] = id end
local n = 0
for i = 1, #ids, 1000 do
  n = n + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, i, math.min(i + 999, #ids)))
end
if n > 0 then redis.call('DECRBY', KEYS[2], n) end
return n
"""

_DEAD_LETTER = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'reason', ARGV[2], 'failures', ARGV[3], 'd', ARGV[4])
  return 1
end
return 0
"""


@dataclass
class LoadReport:
    """What one :meth:`Loader.load` did for a dataset."""

    dataset: str
    loaded: int = 0  # events committed to raw by this call
    skipped: int = 0  # entries already at or below W (acknowledged only)
    dead: int = 0  # events moved to the dead-letter stream
    claimed: int = 0  # pending entries taken over from dead consumers
    watermark: str = "0-0"
    busy: bool = False  # another loader held the dataset


def live_datasets(specs: Sequence[SourceSpec]) -> list[SourceSpec]:
    """Sources whose events arrive through the speed layer."""
    return [s for s in specs if s.type in LIVE_TYPES or s.speed]


class Loader:
    """Moves one dataset's events from its stream into raw, exactly once (see module doc)."""

    def __init__(
        self,
        stores: Stores,
        *,
        consumer: str | None = None,
        batch_size: int = 10_000,
        max_failures: int = 3,
        max_batches: int = 100,
        read_ahead: bool = False,
    ):
        self.stores = stores
        self.redis: redis.Redis = stores.redis
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.max_failures = max_failures
        self.max_batches = max_batches  # per call, so one busy dataset cannot starve others
        # read and decode the next batch while one loads (a long backlog: drain); a batch
        # read ahead when the loader dies is pending like the one being loaded
        self.read_ahead = read_ahead
        self._ack = self.redis.register_script(_ACK)
        self._dead_letter = self.redis.register_script(_DEAD_LETTER)
        # XREADGROUP replies as hiredis parses them: redis-py's reply callback (a dict per
        # entry) costs more than Redis takes to answer
        self._plain = redis.Redis(connection_pool=self.redis.connection_pool)
        self._plain.response_callbacks.pop("XREADGROUP", None)  # the dict is case-insensitive
        self._pending_first = True
        self._ahead: _ReadAhead | None = None  # while a reading-ahead round runs
        self._lock_cursor = None

    def after_commit(self, dataset: str, ids: list[str]) -> None:
        """Called between a commit and its XACK (a seam for crash tests; does nothing)."""

    # -- one round ---------------------------------------------------------------------

    def load(self, dataset: str) -> LoadReport:
        """Load what is waiting for ``dataset`` (up to ``max_batches`` batches)."""
        spec = get_source(self.stores.db, dataset)
        report = LoadReport(dataset)
        with self._exclusive(dataset) as mine:
            if not mine:
                report.busy = True
                return report
            w = get_watermark(self.stores.db, dataset)["stream_id"]
            report.watermark = w
            self._ensure_group(dataset, w)
            report.claimed = self._claim_dead(dataset)
            opts = speed_options(spec)
            grace_ms = int(parse_duration(opts["grace"]) * 1000)
            self._pending_first = True
            ahead = _ReadAhead(self, spec, durable=opts["durable"])
            self._ahead = ahead if self.read_ahead else None
            try:
                for _ in range(self.max_batches):
                    entries, fresh, frame = ahead.next()
                    if not entries:
                        break
                    # entries come in id order: those at or below W (committed by a loader
                    # that died before its XACK) form a prefix
                    w, cut = parse_id(report.watermark), 0
                    while cut < len(entries) and parse_id(entries[cut][0]) <= w:
                        cut += 1
                    done, todo = [eid for eid, _ in entries[:cut]], entries[cut:]
                    if done:
                        report.skipped += self._acknowledge(dataset, done)
                    last = fresh and len(entries) < self.batch_size
                    if self.read_ahead and fresh and not last:
                        ahead.start()  # read and decode the next batch during this load
                    frame = frame if not done else None
                    complete = self._load_part(spec, todo, report, frame) if todo else True
                    self._trim(dataset, report.watermark, grace_ms)
                    if not complete or last:
                        break
            finally:
                self._ahead = None
                ahead.close()  # a batch read ahead stays pending: the next round loads it
        if report.loaded or report.dead:
            self.redis.publish(notify_channel(dataset), "batch")
        return report

    @contextlib.contextmanager
    def _exclusive(self, dataset: str) -> Iterator[bool]:
        with self.stores.db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, dataset))
            mine = bool(cur.fetchone()[0])
            conn.commit()
            self._lock_cursor = cur if mine else None
            try:
                yield mine
            finally:
                self._lock_cursor = None
                if mine and not conn.closed:
                    with contextlib.suppress(psycopg2.Error):
                        conn.rollback()
                        cur.execute(
                            "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, dataset)
                        )

    def _check_lock(self) -> None:
        """Raise unless the session holding the dataset's lock is still alive.

        Postgres drops a session lock only with its session; had ours gone (a Postgres
        restart), another loader could be loading the same entries, so stop before commit.
        """
        self._lock_cursor.execute("SELECT 1")
        self._lock_cursor.connection.commit()

    def _ensure_group(self, dataset: str, w: str) -> None:
        key = log_key(dataset)
        try:
            self.redis.xgroup_create(key, LOADER_GROUP, id=w, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return
        # a new group: first run, or Redis lost its data. Stream ids must stay above W, or
        # new events would look already loaded.
        info = self.redis.xinfo_stream(key)
        last = info.get("last-generated-id") or "0-0"
        if parse_id(last) < parse_id(w):
            self.redis.execute_command("XSETID", key, w)
            log.warning(
                "speed %s: stream restarted below the watermark; moved its id to %s", dataset, w
            )
        if not self.redis.exists(backlog_key(dataset)):
            self.redis.set(backlog_key(dataset), self._count_after(dataset, w), nx=True)

    def _count_after(self, dataset: str, after: str) -> int:
        n, cursor = 0, after
        while True:
            batch = self.redis.xrange(log_key(dataset), min=f"({cursor}", count=10_000)
            if not batch:
                return n
            n += len(batch)
            cursor = batch[-1][0].decode()

    def _claim_dead(self, dataset: str) -> int:
        """Take over every other consumer's pending entries (we hold the dataset's lock)."""
        key = log_key(dataset)
        consumers = self.redis.xinfo_consumers(key, LOADER_GROUP)
        others = [c for c in consumers if _text(c["name"]) != self.consumer]
        pending = {_text(c["name"]): int(c["pending"]) for c in others if int(c["pending"])}
        claimed = 0
        if pending:
            start = "0-0"
            while True:
                reply = self.redis.xautoclaim(
                    key,
                    LOADER_GROUP,
                    self.consumer,
                    min_idle_time=0,
                    start_id=start,
                    count=1000,
                )  # fmt: skip  (redis-py drops the next cursor of a JUSTID reply)
                claimed += len(reply[1])
                start = _text(reply[0])
                if start == "0-0":
                    break
            self.stores.db.execute(
                "INSERT INTO cxd.speed_log (dataset, event, reason, details) VALUES (%s, 'claimed', %s, %s)",
                (
                    dataset,
                    f"took over {sum(pending.values())} pending entries of {len(pending)} dead loader(s)",
                    _json({"consumers": pending, "by": self.consumer}),
                ),
            )
        # forget dead consumers (kill -9 leaves one per process); only empty, long-idle ones,
        # as deleting a consumer drops its pending entries
        for c in self.redis.xinfo_consumers(key, LOADER_GROUP) if others else ():
            if _text(c["name"]) != self.consumer and not int(c["pending"]):
                if int(c["idle"]) > _FORGET_AFTER_MS:
                    self.redis.xgroup_delconsumer(key, LOADER_GROUP, _text(c["name"]))
        return claimed

    def _read(self, dataset: str, *, durable: bool) -> tuple[list[tuple[str, Any]], bool]:
        """Our pending entries first (oldest unloaded), else new ones; (entries, fresh).

        Each entry is (stream id, payload bytes or None for a trimmed pending entry). Once
        a round finds no pending entry it reads only new ones: every batch it loads is
        acknowledged before the next read, or the round ends.
        """
        if self._pending_first:
            entries = self._read_group(dataset, "0", durable=durable)
            if entries:
                return entries, False
            self._pending_first = False
        return self._read_group(dataset, ">", durable=durable), True

    def _read_group(self, dataset: str, start: str, *, durable: bool) -> list[tuple[str, Any]]:
        key = log_key(dataset)
        args = ["XREADGROUP", "GROUP", LOADER_GROUP, self.consumer, "COUNT", self.batch_size]
        args += ["STREAMS", key, start]
        waitaof = False
        if durable:
            from speed.durability import durable_persistence

            waitaof = durable_persistence(self.redis).waitaof
        with _gc_paused():
            if waitaof:
                from speed.durability import WAITAOF_TIMEOUT_MS, check_waitaof

                # the XREADGROUP is written after the events it delivers: once it is
                # fsynced, so are they, and W can never pass an event a Redis crash could
                # take back
                pipe = self._plain.pipeline(transaction=False)
                pipe.execute_command(*args)
                pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
                reply, synced = pipe.execute()
                check_waitaof(synced)
            else:
                reply = self._plain.execute_command(*args)
            return _entries(reply)

    # -- loading -----------------------------------------------------------------------

    def _load_part(
        self,
        spec: SourceSpec,
        part: list[tuple[str, Any]],
        report: LoadReport,
        frame: pd.DataFrame | None = None,
    ) -> bool:
        """Load ``part`` in order; True when every event of it is loaded or dead-lettered.

        ``frame``: the events of ``part`` already decoded (:func:`_frame`), if they were.
        """
        if not part:
            return True
        failures = (
            self.redis.hmget(failures_key(spec.name), [eid for eid, _ in part])
            if self.redis.exists(failures_key(spec.name))  # mostly none: skip sending the ids
            else []
        )
        for i, count in enumerate(failures):
            if count is not None and int(count) >= self.max_failures:
                # gave up on it before (a crash came before its watermark commit)
                return (
                    self._load_part(spec, part[:i], report)
                    and self._give_up(
                        spec, part[i], int(count), self._reason(spec, part[i]), report
                    )
                    and self._load_part(spec, part[i + 1 :], report)
                )
        try:
            self._commit(spec, part, report, frame)  # part is whole here: frame matches it
            return True
        except _POISON as exc:
            if len(part) == 1:
                return self._failed(spec, part[0], exc, report)
            mid = len(part) // 2
            return self._load_part(spec, part[:mid], report) and self._load_part(
                spec, part[mid:], report
            )

    def _commit(
        self,
        spec: SourceSpec,
        part: list[tuple[str, Any]],
        report: LoadReport,
        frame: pd.DataFrame | None = None,
    ) -> None:
        ids = [eid for eid, _ in part]
        self._check_lock()
        load_rows(
            self.stores.db,
            spec,
            frame if frame is not None else _frame(spec, part),
            stream_ids=ids,
            stream_watermark=ids[-1],
            strict=True,
        )
        report.loaded += len(ids)
        report.watermark = ids[-1]
        self.after_commit(spec.name, ids)
        if self._ahead is not None:
            # committed: the XACK may trail (unacknowledged ids <= W are only acknowledged
            # by whichever loader reads them next), so it goes after the read ahead
            self._ahead.later(self._acknowledge, spec.name, ids)
        else:
            self._acknowledge(spec.name, ids)

    def _failed(self, spec: SourceSpec, entry: tuple[str, Any], exc: Exception, report) -> bool:
        eid = entry[0]
        reason = (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(failures_key(spec.name), eid, 1)
        pipe.hset(failures_key(spec.name), f"{eid}:why", reason)
        count = int(pipe.execute()[0])
        if count < self.max_failures:
            log.warning(
                "speed %s: event %s failed to load (%d of %d): %s",
                spec.name, eid, count, self.max_failures, reason,
            )  # fmt: skip
            return False
        return self._give_up(spec, entry, count, reason, report)

    def _give_up(
        self, spec: SourceSpec, entry: tuple[str, Any], count: int, reason: str, report
    ) -> bool:
        """Dead-letter one event, then move W past it (each step safe to repeat)."""
        eid, raw = entry
        self._dead_letter(
            keys=[dead_key(spec.name), dead_ids_key(spec.name)],
            args=[eid, reason, count, raw or b""],
        )
        self.stores.db.execute(
            "INSERT INTO cxd.speed_log (dataset, event, stream_id, reason, details)"
            " VALUES (%s, 'dead_letter', %s, %s, %s)"
            " ON CONFLICT (dataset, stream_id) WHERE event = 'dead_letter' DO NOTHING",
            (spec.name, eid, reason, _json({"failures": count})),
        )
        log.error("speed %s: event %s moved to %s after %d failures: %s",
                  spec.name, eid, dead_key(spec.name), count, reason)  # fmt: skip
        self._check_lock()
        load_rows(self.stores.db, spec, [], stream_ids=[], stream_watermark=eid)
        report.watermark = eid
        report.dead += 1
        self.after_commit(spec.name, [eid])
        self._acknowledge(spec.name, [eid])
        self.redis.hdel(failures_key(spec.name), eid, f"{eid}:why")
        return True

    def _reason(self, spec: SourceSpec, entry: tuple[str, Any]) -> str:
        why = self.redis.hget(failures_key(spec.name), f"{entry[0]}:why")
        return _text(why) if why else "failed to load"

    def _acknowledge(self, dataset: str, ids: list[str]) -> int:
        """XACK ``ids`` and take the newly acknowledged ones off the backlog."""
        return int(
            self._ack(
                keys=[log_key(dataset), backlog_key(dataset)], args=[LOADER_GROUP, " ".join(ids)]
            )
        )

    def _trim(self, dataset: str, watermark: str, grace_ms: int) -> None:
        """Trim below the committed W minus the grace (never an unloaded entry)."""
        ms, _ = parse_id(watermark)
        if ms > grace_ms:
            self.redis.xtrim(log_key(dataset), minid=f"{ms - grace_ms}-0", approximate=True)


# JSON values that go to Postgres as text for a column type (their text reads back as the
# same value, and Postgres refuses the same ones the typing would)
_INTS, _NUMBERS = {int, type(None)}, {int, float, type(None)}
_AS_TEXT = {
    "smallint": _INTS,
    "integer": _INTS,
    "bigint": _INTS,
    "double precision": _NUMBERS,
    "real": _NUMBERS,
    "numeric": _NUMBERS,
    "text": _NUMBERS,
}


class _GcPause:
    """No cyclic garbage collection while a batch is read and decoded: a batch makes
    hundreds of thousands of short-lived acyclic objects (freed by reference counting),
    and the collections they trigger cost as much as the decoding itself. Nests across
    threads; collection resumes (if it was on) when the last holder leaves."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._restore = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            self._holders += 1
            if self._holders == 1:
                self._restore = gc.isenabled()
                gc.disable()
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._restore:
                    gc.enable()


_gc_paused = _GcPause()


def _entries(reply: Any) -> list[tuple[str, Any]]:
    """(id, payload of field ``d`` or None) of a one-stream XREADGROUP reply, RESP2 or 3."""
    if not reply:
        return []
    found = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    return [
        (eid.decode(), (fields[1] if fields[0] == b"d" else _payload(fields)) or None)
        if fields
        else (eid.decode(), None)  # a trimmed pending entry has no fields
        for eid, fields in found
    ]


def _payload(fields: list[bytes]) -> bytes | None:
    return dict(zip(fields[::2], fields[1::2], strict=True)).get(b"d")


def _records(part: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The decoded events of ``part``; PoisonEvent names the first that is not an object."""
    try:
        records = list(map(orjson.loads, [payload for _, payload in part]))
        if set(map(type, records)) <= {dict}:
            return records
    except (ValueError, TypeError):
        pass
    for eid, payload in part:  # find and name the culprit
        try:
            record = None if payload is None else orjson.loads(payload)
        except ValueError as exc:
            raise PoisonEvent(f"event {eid} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise PoisonEvent(f"event {eid} is not a JSON object")
    raise AssertionError("unreachable: every event decoded")


def _frame(spec: SourceSpec, part: list[tuple[str, Any]]) -> pd.DataFrame:
    """The events of ``part`` as a frame of the declared columns (built column by column,
    which costs a fraction of a frame from a list of dicts)."""
    with _gc_paused():
        return _columns(spec, _records(part))


def _columns(spec: SourceSpec, records: list[dict[str, Any]]) -> pd.DataFrame:
    columns = {}
    for col in spec.columns:
        values = list(map(dict.get, records, itertools.repeat(col.name)))
        allowed = _AS_TEXT.get(col.type)
        kinds = set(map(type, values))
        if allowed and kinds <= allowed:
            # numbers become the text a CSV would hold, and Postgres types them during the
            # COPY (as for every text column); it refuses what it cannot take, like the
            # typing would, and the batch is split to find the event
            if type(None) in kinds:
                values = [v if v is None else str(v) for v in values]
            else:
                values = list(map(str, values))
        columns[col.name] = values
    return pd.DataFrame(columns)


class _ReadAhead:
    """Batches for :meth:`Loader.load`, the next new one read and decoded in a thread while
    the current one is loaded (Redis and the decoding overlap Postgres's COPY).

    Only new entries (XREADGROUP ``>``) are read ahead, once the round's pending entries
    are done: every batch before it is then loaded and acknowledged, or the round ends and
    the batch read ahead stays pending for the next round, which reads pending entries
    first. Either way entries load in id order.
    """

    def __init__(self, loader: Loader, spec: SourceSpec, *, durable: bool):
        self.loader, self.spec, self.durable = loader, spec, durable
        self._pool: ThreadPoolExecutor | None = None
        self._next: Future | None = None
        self._later: list[Future] = []

    def next(self) -> tuple[list[tuple[str, Any]], bool, pd.DataFrame | None]:
        """(entries, fresh, their frame or None) of the next batch."""
        if self._next is not None:
            future, self._next = self._next, None
            return future.result()
        entries, fresh = self.loader._read(self.spec.name, durable=self.durable)
        return entries, fresh, None

    def start(self) -> None:
        """Begin reading the next new batch."""
        self._next = self._submit(self._read_new)

    def later(self, fn, *args) -> None:
        """Run ``fn(*args)`` in the reading thread, after what it is doing now."""
        self._later.append(self._submit(fn, *args))

    def _submit(self, fn, *args) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxd-read")
        return self._pool.submit(fn, *args)

    def _read_new(self) -> tuple[list[tuple[str, Any]], bool, pd.DataFrame | None]:
        entries = self.loader._read_group(self.spec.name, ">", durable=self.durable)
        try:
            frame = _frame(self.spec, entries) if entries else None
        except PoisonEvent:
            frame = None  # the load finds the event by splitting the batch
        return entries, True, frame

    def close(self) -> None:
        if self._next is not None:
            with contextlib.suppress(Exception):
                self._next.result()
            self._next = None
        for done in self._later:
            try:
                done.result()
            except Exception:  # left pending at or below W: the next round acknowledges it
                log.exception("speed %s: acknowledging a loaded batch failed", self.spec.name)
        self._later = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def drainer(stores: Stores, batch_size: int = 50_000) -> Loader:
    """A loader whose every round loads all that waits, reading the next batch ahead."""
    return Loader(stores, batch_size=batch_size, max_batches=1_000_000, read_ahead=True)


def drain(
    stores: Stores, dataset: str, batch_size: int = 50_000, loader: Loader | None = None
) -> int:
    """Load every event waiting for ``dataset`` into raw; return how many were loaded.
    ``loader``: a :func:`drainer` kept by a caller that drains again and again."""
    return (loader or drainer(stores, batch_size)).load(dataset).loaded


def load_live(stores: Stores, loader: Loader | None = None) -> list[LoadReport]:
    """One round over every live dataset."""
    loader = loader or Loader(stores)
    reports = []
    for spec in live_datasets(list_sources(stores.db)):
        try:
            reports.append(loader.load(spec.name))
        except Exception:
            log.exception("speed loader: loading %s failed; retrying next round", spec.name)
    return reports


def run_forever(
    stores: Stores,
    *,
    datasets: Sequence[str] = (),
    interval: float = 0.5,
    stop: threading.Event | None = None,
    loader: Loader | None = None,
) -> None:
    """The continuous loader: a round every ``interval`` seconds until ``stop`` is set."""
    stop = stop or threading.Event()
    loader = loader or Loader(stores)
    while not stop.is_set():
        started = time.monotonic()
        if datasets:
            for name in datasets:
                try:
                    loader.load(name)
                except Exception:
                    log.exception("speed loader: loading %s failed; retrying", name)
        else:
            load_live(stores, loader)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def load_live_job() -> int:
    """rq entry point: one loader round over every live dataset; returns events loaded."""
    return sum(r.loaded for r in load_live(process_stores()))


def drain_job(dataset: str) -> int:
    """rq entry point for :func:`drain`."""
    return drain(process_stores(), dataset)


def register_schedule(stores: Stores, every: float = 10.0) -> bool:
    """Make sure rq-scheduler enqueues a loader round every ``every`` seconds; True if added."""
    from datetime import UTC, datetime

    from rq_scheduler import Scheduler

    sch = Scheduler(queue_name=QUEUE, connection=stores.redis)
    if SCHEDULE_ID in sch:
        return False
    sch.schedule(
        datetime.now(UTC), load_live_job, interval=int(every), repeat=None, id=SCHEDULE_ID,
        queue_name=QUEUE, result_ttl=60,
    )  # fmt: skip
    return True

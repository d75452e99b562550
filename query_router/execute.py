"""Execution in the order that makes merged answers exact (invariant 1): Redis was read
while planning; now take one Postgres snapshot, read the watermark W in it, keep only
the speed rows above W, and run the query as the SELECT-only analyst role.

Analysts' SQL is sent with the extended protocol (one statement per message) wrapped as
``SELECT * FROM (<query>) AS _cxd_answer``, so Postgres itself
refuses anything but one SELECT (a second statement, DO, COPY, SET, CALL are syntax
errors; a data-modifying WITH is not allowed in a subquery), inside a READ ONLY
transaction, after ``SET LOCAL ROLE cxd_analyst``, with a statement timeout and a row
cap. The wrapper, unlike a ``DECLARE ... CURSOR``, leaves Postgres free to scan raw with
parallel workers. SQL that bypassed validation (:func:`run_as_analyst`) still runs as a
server-side cursor: its text may end in a comment or a semicolon.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import itertools
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.string import TextLoader

from cxd.errors import TransientError
from cxd.stores import Stores
from query_router.exceptions import QueryError
from query_router.plan import Plan
from query_router.read_speed import before_snapshot, note_frontier, note_watermark, window_dataset
from query_router.rewrite_merge import SPEED_PREFIX, speed_columns
from query_router.speed_eval import in_range
from query_router.speed_rows import BinaryArray, quote_ident, register, row_arrays
from speed.stream import parse_id

ANALYST_ROLE = "cxd_analyst"
STATEMENT_TIMEOUT_MS = 30_000
ROW_CAP = 100_000

# rows per chunk of a streamed answer (chunked reads need libpq 17; row by row before)
CHUNK_ROWS = 2000 if psycopg.pq.version() >= 170000 else 1
STATS = {"postgres_queries": 0}  # analyst statements sent to Postgres by this process

_OID_TYPES = {
    16: "boolean", 20: "bigint", 21: "smallint", 23: "integer", 25: "text", 700: "real",
    701: "double precision", 1700: "numeric", 1082: "date", 1114: "timestamp",
    1184: "timestamptz", 1043: "text", 3802: "jsonb", 114: "json", 2950: "uuid", 19: "text",
    1186: "interval", 1083: "time",
}  # fmt: skip


class _Pool:
    """A small pool of psycopg 3 connections for one database URL (per process)."""

    def __init__(self, url: str, size: int = 8):
        self.url = url
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.Semaphore(size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg.connect(self.url, application_name="cxd-router", autocommit=False)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                for name in ("interval", "time", "timetz"):  # as Postgres prints them (JSON-ready)
                    conn.adapters.register_loader(name, TextLoader)
                register(conn)  # speed rows go as binary arrays
            try:
                yield conn
            finally:
                if conn.closed or conn.broken:
                    conn.close()
                else:
                    conn.rollback()
                    self._idle.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


_pools: dict[tuple[int, str], _Pool] = {}
_pools_lock = threading.Lock()


@atexit.register
def close_pools() -> None:
    """Close this process's idle analyst connections."""
    with _pools_lock:
        for key, p in list(_pools.items()):
            if key[0] == os.getpid():
                p.close()


def pool(url: str) -> _Pool:
    """This process's analyst connection pool for ``url`` (never shared across a fork)."""
    key = (os.getpid(), url)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = _Pool(url)
        return _pools[key]


def _fail(exc: psycopg.Error) -> Exception:
    """The CxdError an error from Postgres becomes."""
    first = (str(exc).strip().splitlines() or ["error"])[0]
    if isinstance(exc, pg_errors.QueryCanceled):
        return QueryError(
            f"the query ran longer than the statement timeout: {first}",
            details={"sqlstate": exc.sqlstate},
        )
    if isinstance(exc, psycopg.OperationalError) and not exc.sqlstate:
        return TransientError(f"Postgres is not reachable: {first}")
    return QueryError(f"Postgres refused the query: {first}", details={"sqlstate": exc.sqlstate})


def _dropped(exc: psycopg.Error) -> bool:
    """True when the pooled connection itself died (server restart, terminated backend)."""
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("57P", "08"))
    )


def with_connection(stores: Stores, work):
    """``work(conn)`` on a pooled connection, retried once on a fresh one if it was dropped."""
    for attempt in (0, 1):
        try:
            with pool(stores.settings.database_url).connection() as conn:
                return work(conn)
        except psycopg.Error as exc:
            if attempt == 0 and _dropped(exc):
                # a restart or terminated backends end every idle connection, not just this
                # one: start the retry from fresh connections (read-only work: safe to rerun)
                pool(stores.settings.database_url).close()
                continue
            raise _fail(exc) from None
    raise AssertionError("unreachable")


def _prepare(cur: psycopg.Cursor, timeout_ms: int) -> None:
    # one round trip; search_path = raw so bypass tests hit the real tables; every row of
    # the cursor is fetched, so plan for all of them, not for a fast first row
    cur.execute(
        f"SET LOCAL statement_timeout = {int(timeout_ms)}; SET LOCAL TimeZone = 'UTC';"
        f" SET LOCAL search_path = raw; SET LOCAL cursor_tuple_fraction = 1;"
        f" SET LOCAL ROLE {ANALYST_ROLE}"
    )


def _run(
    conn: psycopg.Connection, sql: str, args: list, row_cap: int, *, wrap: bool = False
) -> dict[str, Any]:
    STATS["postgres_queries"] += 1
    if wrap:
        # rows arrive in chunks and reading stops after the cap (psycopg then cancels the
        # rest); no LIMIT, which would make Postgres plan for the first rows only
        cur = psycopg.RawCursor(conn)
        wrapped = f"SELECT * FROM (\n{sql}\n) AS _cxd_answer"
        rows = cur.stream(wrapped, args, size=CHUNK_ROWS)
        try:
            data = list(itertools.islice(rows, row_cap + 1))
            rows.close()
            if not data:  # a stream keeps no description without rows: ask for it alone
                cur.execute(wrapped + " LIMIT 0", args)
            description = cur.description
        finally:
            rows.close()
            cur.close()
    else:
        cur = psycopg.RawServerCursor(conn, "cxd_query")
        try:
            cur.execute(sql, args)
            description = cur.description
            data = cur.fetchmany(row_cap + 1)
        finally:
            cur.close()
    columns = [{"name": d.name, "type": _OID_TYPES.get(d.type_code, "text")} for d in description]
    names = [c["name"] for c in columns]
    return {
        "columns": columns,
        "rows": [dict(zip(names, row, strict=True)) for row in data[:row_cap]],
        "truncated": len(data) > row_cap,
    }


def run_as_analyst(
    stores: Stores,
    sql: str,
    args: list | None = None,
    *,
    row_cap: int = ROW_CAP,
    timeout_ms: int = STATEMENT_TIMEOUT_MS,
) -> dict[str, Any]:
    """Run ``sql`` as the analyst role, with no validation: Postgres is the last line."""

    def work(conn: psycopg.Connection) -> dict[str, Any]:
        with conn.cursor() as cur:
            _prepare(cur, timeout_ms)
        return _run(conn, sql, list(args or []), row_cap)

    return with_connection(stores, work)


# last parameters of each dataset's speed rows (dashboards repeat)
_encoded: dict[tuple, list[BinaryArray | str]] = {}


def speed_row_params(
    plan: Plan, name: str, watermark: str, scope: str = ""
) -> list[BinaryArray | str]:
    """The dataset's speed rows above W (in the queried range), in stream order, as one
    array parameter per column and one of their order."""
    view = plan.speed[name]
    columns = speed_columns(plan.datasets[name])
    if plan.layers[name] == "speed" and view.latest is not None:
        return row_arrays(columns, view.latest)
    # a live window reads no raw row: every event above the frontier's W counts
    live = plan.layers[name] == "speed"
    start = 0 if live else bisect.bisect_right(view.ids, parse_id(watermark))
    keep = in_range(plan, name)
    bounds = (plan.bounds.get(name), plan.equalities.get(name)) if keep else None
    last = view.entries[-1][0] if view.entries else None
    memo = (scope, name, watermark, live, last, len(view.entries) - start, repr(bounds))
    memo += (tuple(columns),)
    if memo in _encoded:
        return _encoded[memo]
    rows = [
        rec
        for (_, rec), t in zip(view.entries[start:], view.times[start:], strict=True)
        if keep is None or keep(t, rec)
    ]
    params = row_arrays(columns, rows)
    if len(_encoded) > 64:
        _encoded.clear()
    _encoded[memo] = params
    return params


def _marks_sql(plan: Plan, windows: list[str]) -> str:
    """The snapshot's first statement: W per dataset, and raw's newest time of ``windows``."""
    newest = " ".join(
        f"WHEN {_literal(name)} THEN (SELECT max({quote_ident(plan.datasets[name].time_column)})"
        f"::text FROM raw.{quote_ident(name)})"
        for name in windows
    )
    return (
        "SELECT dataset, stream_id, refreshed_at, "
        + (f"CASE dataset {newest} END" if newest else "NULL::text")
        + " FROM cxd.watermarks WHERE dataset = ANY(%s)"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def execute(
    stores: Stores,
    plan: Plan,
    *,
    row_cap: int = ROW_CAP,
    timeout_ms: int = STATEMENT_TIMEOUT_MS,
) -> dict[str, Any]:
    """Run a planned query in one snapshot; return columns, rows and the watermarks read."""

    scope = stores.settings.database_url
    windows = [n for n, spec in plan.datasets.items() if window_dataset(spec)]
    marks_sql = _marks_sql(plan, windows)

    def work(conn: psycopg.Connection) -> dict[str, Any]:
        before = {name: before_snapshot(stores.redis, name) for name in windows}
        with conn.cursor() as cur:
            # the first statement takes the snapshot: W is read in it (invariant 1), and
            # with it raw's newest time of datasets a live window may later skip raw for
            cur.execute(marks_sql, (list(plan.datasets),))
            marks = {
                r[0]: {"stream_id": r[1], "refreshed_at": r[2], "max_time": r[3]}
                for r in cur.fetchall()
            }
            for name in plan.datasets:
                if name in marks:
                    note_watermark(scope, name, marks[name]["stream_id"])
            for name in windows:
                if name in marks:
                    mark = marks[name]
                    note_frontier(scope, name, mark["stream_id"], mark["max_time"], before[name])
            args, arrays = [], {}
            for name in plan.positional:
                if name.startswith(SPEED_PREFIX):
                    dataset, _, index = name.removeprefix(SPEED_PREFIX).rpartition("#")
                    if dataset not in arrays:
                        w = marks.get(dataset, {}).get("stream_id", "0-0")
                        arrays[dataset] = speed_row_params(plan, dataset, w, scope)
                    args.append(arrays[dataset][int(index)])
                else:
                    args.append(plan.bound.get(name))
            _prepare(cur, timeout_ms)
        result = _run(conn, plan.text(), args, row_cap, wrap=True)
        result["watermarks"] = marks
        return result

    return with_connection(stores, work)

"""Loads: rows are typed and checked in chunks, go by COPY into staging, then merge into raw
in one transaction together with the watermark and the source cursor (invariant 2).

This module is the batch layer's write interface; the speed layer's hand-off calls
:func:`load_rows` with the stream ids of the events it loads. A load either applies
completely (rows, quarantined rows, cursor, watermark) or not at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import execute_values

from batch import copytext, quality
from batch.exceptions import LoadError, QualityError
from batch.partitions import ensure_months, ensure_partitions
from batch.tables import (
    STAGING_ENGINE,
    ensure_tables,
    raw_table,
    same_type,
    staging_table,
    unique_columns,
)
from cxd.catalog import SourceSpec

log = logging.getLogger(__name__)

_KEEP = object()
CHUNK_ROWS = 100_000
MODES = ("incremental", "full", "backfill", "reprocess")
_COPY_LINE = re.compile(r"line (\d+)(?:, column (\w+))?")


@dataclass
class Chunk:
    """Rows for a load plus where they came from (for line numbers and provenance)."""

    rows: pd.DataFrame | Sequence[dict[str, Any]]
    media_type: str | None = None
    first_position: int = 0  # position of the first row within its payload
    stream_ids: Sequence[str] | None = None
    origin_run: int | None = None  # the run whose fetch the rows came from (reprocess)


@dataclass
class LoadResult:
    """What one load did."""

    received: int = 0  # rows the ingest produced
    staged: int = 0  # rows that passed typing and row checks
    loaded: int = 0  # raw rows inserted, updated or (point_in_time) versions closed
    quarantined: int = 0
    out_of_range: int = 0  # backfill rows outside the requested time range
    events: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, int] = field(default_factory=dict)  # ms: typing, copy, merge


def to_frame(spec: SourceSpec, rows: pd.DataFrame | Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the declared columns (missing ones are null)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    frame = frame.reset_index(drop=True)
    for name in spec.column_names:
        if name not in frame.columns:
            frame[name] = None
    return frame[spec.column_names]


def split(frame: pd.DataFrame, size: int = CHUNK_ROWS) -> Iterable[tuple[int, pd.DataFrame]]:
    """(first position, slice) pieces of ``frame`` of at most ``size`` rows."""
    for start in range(0, max(len(frame), 1), size):
        yield start, frame.iloc[start : start + size]


def _ident_list(cols: Sequence[str], prefix: str | None = None) -> sql.Composable:
    if prefix:
        return sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(c)) for c in cols
        )
    return sql.SQL(", ").join(map(sql.Identifier, cols))


def _match(cols: Sequence[str], left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{l}.{c} = {r}.{c}").format(
            l=sql.Identifier(left), r=sql.Identifier(right), c=sql.Identifier(c)
        )
        for c in cols
    )


def _differs(cols: Sequence[str], left: str, right: str) -> sql.Composable:
    if not cols:
        return sql.SQL("false")
    return sql.SQL("({}) IS DISTINCT FROM ({})").format(
        _ident_list(cols, left), _ident_list(cols, right)
    )


_CopyColumns = tuple[list[np.ndarray], list[str]]  # field columns, constant trailing fields


@dataclass
class _Piece:
    """A slice of a chunk on its way into staging or raw."""

    chunk: Chunk
    rows: pd.DataFrame
    first: int  # position of its first row within the payload
    seen: dict[str, np.ndarray] = field(default_factory=dict)  # checker memory before it
    typed: pd.DataFrame | None = None
    rejects: quality.Rejects | None = None
    keep: np.ndarray | None = None  # rows to COPY (the others are quarantined)
    months: list[datetime] | None = None  # partitions a COPY into raw needs; None: staging
    fields: list[np.ndarray] = field(default_factory=list)  # COPY text of the columns

    def good(self) -> pd.DataFrame:
        return self.typed if self.keep.all() else self.typed[self.keep]


class _Loader:
    """One load in one transaction (cursor ``cur``)."""

    def __init__(self, cur, spec: SourceSpec, run_id: int | None, mode: str, strict: bool = False):
        self.cur, self.spec, self.run_id, self.mode = cur, spec, run_id, mode
        self.strict = strict  # refuse the whole load instead of quarantining a row
        self.result = LoadResult()
        self.checker = quality.ChunkChecker(spec)
        self.unique = spec.key if spec.kind == "point_in_time" else unique_columns(spec)
        self._key_hashes: list[np.ndarray] = []
        self._ord = 0
        self._rejected: dict[str, list[str]] = {}
        self.origin_runs: set[int] = set()  # reprocess: runs whose rows this load replaces
        self.staging = staging_table(spec.name)
        self.raw = raw_table(spec.name)
        self.cols = spec.column_names
        self._copy_sql: dict[tuple[bool, bool], str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.used_staging = False  # some slice went to staging (then the merge runs)
        self._inflight: tuple[_Piece, bool, Future] | None = None  # slice, into raw, COPY
        # incremental loads of time series / history COPY straight into raw when no row
        # can meet an existing key: every time later than raw's newest, or no key at all
        self.direct = mode == "incremental" and spec.kind in ("time_series", "instantaneous")
        self.raw_newest = None
        if self.direct and self.unique:
            cur.execute(
                sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(spec.time_column), self.raw)
            )
            self.raw_newest = cur.fetchone()[0]

    # staging -----------------------------------------------------------------
    #
    # Slices are pipelined: while Postgres works through one slice's COPY (in a thread,
    # which waits on the socket without holding the GIL), the next slice is typed and
    # checked here. Each COPY is its own savepoint; a slice whose COPY fails is loaded
    # again the careful way (typed here, bad rows quarantined, or merged through staging),
    # and the slice typed after it is typed again, since its checks may depend on it.

    def stage(self, chunk: Chunk) -> None:
        if chunk.origin_run is not None:  # even with no rows: that run's rows are replaced
            self.origin_runs.add(chunk.origin_run)
        frame = to_frame(self.spec, chunk.rows)
        self.result.received += len(frame)
        for start, rows in split(frame):
            if len(rows):
                self._stage_piece(_Piece(chunk, rows, chunk.first_position + start))

    def finish_staging(self) -> None:
        """Wait for the last slice's COPY (and load it again if it failed)."""
        since = time.perf_counter()
        self._settle()
        self._clock("copy", since)

    def close(self) -> None:
        """Wait for a COPY still running (before its transaction ends) and stop the thread."""
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                self._inflight[2].result()
            self._inflight = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _clock(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.result.timings[name] = self.result.timings.get(name, 0) + int(1000 * (now - since))
        return now

    def _stage_piece(self, piece: _Piece) -> None:
        # first trust Postgres to type the values (fast); if the COPY refuses one, the
        # slice is typed here, what fails is quarantined and the rest COPYed (_settle)
        self._prepare(piece, trust=True, direct=self.direct)
        since = time.perf_counter()
        if self._settle():
            since = self._clock("copy", since)
            self._prepare(piece, trust=True, direct=self.direct)
            since = time.perf_counter()
        self._start(piece)
        self._clock("copy", since)

    def _prepare(self, piece: _Piece, *, trust: bool, direct: bool) -> None:
        """Type and check ``piece`` and make its COPY text (no database work)."""
        since = time.perf_counter()
        piece.seen = dict(self.checker._seen)
        piece.typed, piece.rejects = self.checker.check(piece.rows, trust=trust)
        piece.keep = np.ones(len(piece.rows), dtype=bool)
        for pos in piece.rejects.found:
            piece.keep[pos] = False
        piece.months = self._direct_months(piece.good()) if direct else None
        piece.fields = [copytext.field_column(piece.typed[c]) for c in self.cols]
        self._clock("typing", since)

    def _start(self, piece: _Piece) -> None:
        """Begin the COPY of ``piece`` (in the copy thread); :meth:`_settle` ends it."""
        if self.strict and piece.rejects.found:
            self._refuse(piece)
        to_raw = self._make_room(piece)
        self.used_staging |= not to_raw
        statement, columns = self._copy_input(piece, to_raw)
        self.cur.execute("SAVEPOINT copy_chunk")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxd-copy")
        future = self._pool.submit(self._copy_rows, statement, columns, piece)
        self._inflight = (piece, to_raw, future)

    def _settle(self) -> bool:
        """End the COPY in flight; True when it failed and its slice was loaded again."""
        if self._inflight is None:
            return False
        piece, to_raw, future = self._inflight
        self._inflight = None
        try:
            future.result()
        except psycopg2.errors.DataError:
            self.cur.execute("ROLLBACK TO SAVEPOINT copy_chunk")
            if self.strict:
                raise
            self.checker._seen = dict(piece.seen)
            self._stage_serial(piece, trust=False, direct=self.direct)
            return True
        except psycopg2.errors.UniqueViolation:
            self.cur.execute("ROLLBACK TO SAVEPOINT copy_chunk")
            self.checker._seen = dict(piece.seen)
            self._stage_serial(piece, trust=True, direct=False)
            return True
        self.cur.execute("RELEASE SAVEPOINT copy_chunk")
        self._done(piece, to_raw)
        return False

    def _stage_serial(self, piece: _Piece, *, trust: bool, direct: bool) -> None:
        """Load ``piece`` without pipelining, finding and quarantining refused values."""
        while True:
            self._prepare(piece, trust=trust, direct=direct)
            if self.strict and piece.rejects.found:
                self._refuse(piece)
            to_raw = self._make_room(piece)
            self.used_staging |= not to_raw
            try:
                self._copy(piece, to_raw=to_raw, retry_lines=not trust)
                break
            except psycopg2.errors.DataError:
                if self.strict:
                    raise
                self.checker._seen = dict(piece.seen)
                trust = False
            except psycopg2.errors.UniqueViolation:
                self.checker._seen = dict(piece.seen)
                direct = False  # a key met an existing row: merge this slice instead
        self._done(piece, to_raw)

    def _done(self, piece: _Piece, to_raw: bool) -> None:
        """Book a COPYed slice: quarantine its rejects, count it, remember its keys."""
        self._quarantine(piece.chunk, piece.rows, piece.first, piece.rejects)
        good = int(piece.keep.sum())
        self.result.staged += good
        self._ord += len(piece.rows)
        if to_raw:
            self.result.loaded += good
        elif self.unique and good:
            self._track_keys(piece.good())

    def _direct_months(self, typed: pd.DataFrame) -> list[datetime] | None:
        """The months whose partitions ``typed`` needs when it may be COPYed straight into
        raw ([] when it needs none), else None."""
        t = self.spec.time_column
        if not t or not len(typed):
            return None if self.unique else []
        times = pd.to_datetime(typed[t], errors="coerce", utc=True, format="ISO8601")
        if times.isna().any():
            return None  # let the staging path type and quarantine them
        if self.unique and self.raw_newest is not None:
            newest = pd.Timestamp(self.raw_newest)
            newest = newest.tz_localize("UTC") if newest.tzinfo is None else newest
            if times.min() <= newest:
                return None
        months = np.unique(times.to_numpy(dtype="datetime64[ns]").astype("datetime64[M]"))
        return [datetime(d.year, d.month, 1) for d in months.astype(object)]

    def _make_room(self, piece: _Piece) -> bool:
        """True when ``piece`` goes straight into raw (whose partitions are made here)."""
        if piece.months is None:
            return False
        if piece.months:
            ensure_months(self.cur, self.spec, piece.months)
        return True

    def _refuse(self, piece: _Piece) -> None:
        pos, (check, reason) = min(piece.rejects.found.items())
        offset = piece.first - piece.chunk.first_position + pos
        ids = piece.chunk.stream_ids
        where = ids[offset] if ids is not None else f"row {piece.first + pos}"
        raise LoadError(f"{self.spec.name}: {where} fails {check}: {reason}")

    def _copy_statement(self, to_raw: bool, with_ids: bool) -> str:
        """COPY into raw or staging: the declared columns, then the engine columns in the
        order :meth:`_copy_input` writes them (varying ones first, constant ones last)."""
        engine = ["_stream_id"] if with_ids else []
        engine += ["_run_id"] if to_raw else ["_ord", "_run_id"]
        engine += [] if with_ids else ["_stream_id"]  # constant null, at the end
        key = (to_raw, with_ids)
        if key not in self._copy_sql:
            self._copy_sql[key] = (
                sql.SQL("COPY {} ({}) FROM STDIN")
                .format(self.raw if to_raw else self.staging, _ident_list([*self.cols, *engine]))
                .as_string(self.cur.connection)
            )
        return self._copy_sql[key]

    def _copy_input(self, piece: _Piece, to_raw: bool) -> tuple[str, _CopyColumns]:
        """(COPY statement, (field columns, constant tail)) for every row of ``piece``."""
        n, chunk = len(piece.rows), piece.chunk
        offset = piece.first - chunk.first_position
        ids = chunk.stream_ids[offset : offset + n] if chunk.stream_ids is not None else None
        columns = list(piece.fields)
        if ids is not None:
            columns.append(copytext.field_column(ids))
        if not to_raw:
            columns.append(np.arange(self._ord, self._ord + n).astype(str).astype(object))
        run = (chunk.origin_run or self.run_id) if to_raw else chunk.origin_run
        tail = [copytext.constant_field(run)] + ([] if ids is not None else [copytext.NULL])
        return self._copy_statement(to_raw, ids is not None), (columns, tail)

    def _copy_rows(self, statement: str, columns: _CopyColumns, piece: _Piece) -> None:
        """COPY the kept rows of ``piece`` (runs in the copy thread, or inline)."""
        fields, tail = columns
        rows = np.flatnonzero(piece.keep)
        if len(rows):
            good = fields if len(rows) == len(piece.keep) else [c[rows] for c in fields]
            self.cur.copy_expert(statement, copytext.BlockReader(copytext.blocks(good, tail)))

    def _copy(self, piece: _Piece, *, to_raw: bool, retry_lines: bool) -> None:
        """COPY ``piece`` inline; with ``retry_lines``, a row Postgres refuses is
        quarantined and the rest COPYed again."""
        statement, columns = self._copy_input(piece, to_raw)
        while True:
            self.cur.execute("SAVEPOINT copy_chunk")
            try:
                self._copy_rows(statement, columns, piece)
                self.cur.execute("RELEASE SAVEPOINT copy_chunk")
                return
            except psycopg2.errors.DataError as exc:
                self.cur.execute("ROLLBACK TO SAVEPOINT copy_chunk")
                found = _COPY_LINE.search(exc.diag.context or "")
                if not retry_lines or not found:
                    raise
                # a value our typing let through but Postgres refused: quarantine that row
                pos = int(np.flatnonzero(piece.keep)[int(found.group(1)) - 1])
                piece.keep[pos] = False
                piece.rejects.found[pos] = (
                    f"type:{found.group(2) or 'row'}",
                    exc.diag.message_primary or str(exc),
                )
            except psycopg2.errors.UniqueViolation:
                self.cur.execute("ROLLBACK TO SAVEPOINT copy_chunk")
                raise

    def _track_keys(self, typed: pd.DataFrame) -> None:
        self._key_hashes.append(
            pd.util.hash_pandas_object(typed[self.unique], index=False).to_numpy()
        )

    def _has_duplicate_keys(self) -> bool:
        """True when two staged rows share a key (then the merge deduplicates first)."""
        if not self._key_hashes:
            return False
        hashes = np.concatenate(self._key_hashes)
        return len(pd.unique(hashes)) < len(hashes)

    def _quarantine(self, chunk: Chunk, piece: pd.DataFrame, first: int, rejects) -> None:
        if not rejects.found:
            return
        rows = []
        for pos, (check, reason) in sorted(rejects.found.items()):
            line = quality.line_of(chunk.media_type, first + pos)
            rows.append(
                (self.spec.name, self.run_id, line, quality.json_row(piece, pos), check, reason)
            )
            self._rejected.setdefault(check, [])
            if len(self._rejected[check]) < 3:
                self._rejected[check].append(f"line {line}: {reason}")
            else:
                self._rejected[check].append("")
        execute_values(
            self.cur,
            "INSERT INTO cxd.quarantine (dataset, run_id, line, row, check_name, reason) VALUES %s",
            rows,
        )
        self.result.quarantined += len(rows)

    # merge -------------------------------------------------------------------

    def merge(self, time_range: tuple[Any, Any] | None) -> None:
        cur = self.cur
        for check, samples in self._rejected.items():
            shown = "; ".join(s for s in samples if s)
            self.result.events.append(
                {
                    "check_name": check,
                    "severity": "warning",
                    "message": f"{len(samples)} row(s) quarantined ({shown})",
                }
            )
        if self.direct and not self.used_staging:
            return  # an incremental load that went straight into raw: nothing to merge
        if time_range is not None:
            cur.execute(
                sql.SQL("DELETE FROM {s} WHERE NOT ({t} >= %s AND {t} < %s)").format(
                    s=self.staging, t=sql.Identifier(self.spec.time_column)
                ),
                time_range,
            )
            self.result.out_of_range = cur.rowcount
        ensure_partitions(cur, self.spec, self.staging)
        if self._has_duplicate_keys():
            # the last row per key wins (later stream id / later position in the input)
            cur.execute(
                sql.SQL("DELETE FROM {s} a USING {s} b WHERE {m} AND a._ord < b._ord").format(
                    s=self.staging, m=_match(self.unique, "a", "b")
                )
            )
        if self.spec.kind == "point_in_time":
            self._merge_versions()
        elif self.unique:
            self._merge_upsert()
        else:
            self._merge_append(time_range)

    def _insert(self, versioned: bool = False, where: sql.Composable | None = None):
        """INSERT INTO raw SELECT FROM staging (alias ``s``); versions start at ``%(at)s``."""
        return sql.SQL(
            "INSERT INTO {raw} ({c}, _stream_id, _seq, _run_id{xc})"
            " SELECT {c}, _stream_id, nextval('cxd.change_seq'), coalesce(_run_id, %(run_id)s){xv}"
            " FROM {s} s {w}"
        ).format(
            raw=self.raw,
            c=_ident_list(self.cols),
            s=self.staging,
            xc=sql.SQL(", _valid_from" if versioned else ""),
            xv=sql.SQL(", %(at)s" if versioned else ""),
            w=where or sql.SQL(""),
        )

    def _appends_only(self) -> bool:
        """True when no staged row can conflict with raw: every staged time is later than
        raw's newest (the unique key holds the time column), e.g. a time series growing."""
        t = self.spec.time_column
        if self.mode == "full" or self.spec.kind != "time_series" or t not in self.unique:
            return False
        self.cur.execute(
            sql.SQL(
                "SELECT (SELECT max({t}) FROM {raw}) IS NULL"
                " OR (SELECT min({t}) FROM {s}) > (SELECT max({t}) FROM {raw})"
            ).format(t=sql.Identifier(t), raw=self.raw, s=self.staging)
        )
        return bool(self.cur.fetchone()[0])

    def _merge_upsert(self) -> None:
        if self._appends_only():
            # nothing in raw has these keys: a plain INSERT, no comparison needed
            self.cur.execute(self._insert(), {"run_id": self.run_id})
            self.result.loaded += self.cur.rowcount
            return
        # One join of staging with raw finds every key that is new, changed or (full
        # refresh) gone; then only those rows are written. A hash join: sorting both
        # sides for a merge join, or probing raw's index per staged row with ON CONFLICT
        # (which also locks every unchanged row), costs several times more.
        key, full, reprocess = self.unique, self.mode == "full", self.mode == "reprocess"
        others = [c for c in self.cols if c not in key]
        kept = [sql.Identifier(f"_cxd_k{i}") for i in range(len(key))]
        stmt = sql.SQL(
            "WITH d AS MATERIALIZED ("
            " SELECT {rkeys}, r._seq AS _cxd_raw,{raw_run} {scols},"
            " s._stream_id, s._run_id, s._ord"
            " FROM {s} s {join} {raw} r ON {m}"
            " WHERE r._seq IS NULL OR (s._ord IS NOT NULL AND {d}){gone_filter}),"
            " gone AS ({gone}),"
            " changed AS (UPDATE {raw} r SET {assign}, _stream_id = d._stream_id,"
            "  _seq = nextval('cxd.change_seq'), _ingested_at = now(),"
            "  _run_id = coalesce(d._run_id, %(run_id)s)"
            "  FROM d WHERE d._ord IS NOT NULL AND d._cxd_raw IS NOT NULL AND {md}{later} RETURNING 1),"
            " added AS (INSERT INTO {raw} ({c}, _stream_id, _seq, _run_id)"
            "  SELECT {c}, _stream_id, nextval('cxd.change_seq'), coalesce(_run_id, %(run_id)s)"
            "  FROM d WHERE d._cxd_raw IS NULL RETURNING 1)"
            " SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM changed)"
            " + (SELECT count(*) FROM added)"
        ).format(
            rkeys=sql.SQL(", ").join(
                sql.SQL("r.{} AS {}").format(sql.Identifier(k), alias)
                for k, alias in zip(key, kept, strict=True)
            ),
            scols=_ident_list(self.cols, "s"),
            s=self.staging,
            join=sql.SQL("FULL JOIN" if full else "LEFT JOIN"),
            raw=self.raw,
            m=_match(key, "s", "r"),
            d=_differs(others, "r", "s"),
            gone_filter=sql.SQL(" OR (s._ord IS NULL AND r._stream_id IS NULL)" if full else ""),
            gone=(
                sql.SQL("DELETE FROM {raw} r USING d WHERE d._ord IS NULL AND {m} RETURNING 1")
                if full
                else sql.SQL("SELECT 1 WHERE false")
            ).format(
                raw=self.raw,
                m=sql.SQL(" AND ").join(
                    sql.SQL("r.{} = d.{}").format(sql.Identifier(k), alias)
                    for k, alias in zip(key, kept, strict=True)
                ),
            ),
            assign=sql.SQL(", ").join(
                sql.SQL("{0} = d.{0}").format(sql.Identifier(c)) for c in others or key[:1]
            ),
            md=_match(key, "r", "d"),
            # a reprocessed run rewrites only the keys no later run has written since
            raw_run=sql.SQL(" r._run_id AS _cxd_raw_run," if reprocess else ""),
            later=sql.SQL(
                " AND (d._cxd_raw_run IS NULL OR d._cxd_raw_run <= d._run_id)" if reprocess else ""
            ),
            c=_ident_list(self.cols),
        )
        self.cur.execute("SET LOCAL enable_mergejoin = off")
        self.cur.execute(stmt, {"run_id": self.run_id})
        self.result.loaded += self.cur.fetchone()[0]
        self.cur.execute("SET LOCAL enable_mergejoin = DEFAULT")

    def _merge_append(self, time_range: tuple[Any, Any] | None = None) -> None:
        if self.mode == "full":
            self.cur.execute(sql.SQL("DELETE FROM {} WHERE _stream_id IS NULL").format(self.raw))
            self.result.loaded += self.cur.rowcount
        elif self.mode == "backfill" and time_range is not None:
            # rows have no identity: the range's batch rows are replaced by what was fetched
            self.cur.execute(
                sql.SQL(
                    "DELETE FROM {raw} WHERE _stream_id IS NULL AND {t} >= %s AND {t} < %s"
                ).format(raw=self.raw, t=sql.Identifier(self.spec.time_column)),
                time_range,
            )
            self.result.loaded += self.cur.rowcount
        elif self.mode == "reprocess":
            # rows of the reprocessed runs are replaced by what the ingest makes of them now
            self.cur.execute(
                sql.SQL("DELETE FROM {raw} WHERE _stream_id IS NULL AND _run_id = ANY(%s)").format(
                    raw=self.raw
                ),
                (sorted(self.origin_runs),),
            )
            self.result.loaded += self.cur.rowcount
        self.cur.execute(self._insert(), {"run_id": self.run_id})
        self.result.loaded += self.cur.rowcount

    def _merge_versions(self) -> None:
        cur, key = self.cur, self.unique
        others = [c for c in self.cols if c not in key]
        cur.execute("SELECT clock_timestamp()")
        at = cur.fetchone()[0]
        params = {"run_id": self.run_id, "at": at}
        if self.mode == "reprocess":
            # correct the versions the reprocessed runs created, in place
            assign = sql.SQL(", ").join(
                sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in others
            )
            if others:
                cur.execute(
                    sql.SQL(
                        "UPDATE {raw} r SET {a}, _seq = nextval('cxd.change_seq'), _ingested_at = now()"
                        " FROM {s} s WHERE r._run_id = s._run_id AND {m} AND {d}"
                    ).format(
                        raw=self.raw,
                        a=assign,
                        s=self.staging,
                        m=_match(key, "r", "s"),
                        d=_differs(others, "r", "s"),
                    )
                )
                self.result.loaded += cur.rowcount
            return
        # close the current versions whose values changed ...
        cur.execute(
            sql.SQL(
                "UPDATE {raw} r SET _valid_to = %(at)s, _seq = nextval('cxd.change_seq')"
                " FROM {s} s WHERE r._valid_to IS NULL AND {m} AND {d}"
            ).format(
                raw=self.raw, s=self.staging, m=_match(key, "r", "s"), d=_differs(others, "r", "s")
            ),
            params,
        )
        if self.mode == "full":
            # ... and those of entities gone from the source
            cur.execute(
                sql.SQL(
                    "UPDATE {raw} r SET _valid_to = %(at)s, _seq = nextval('cxd.change_seq')"
                    " WHERE r._valid_to IS NULL AND r._stream_id IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM {s} s WHERE {m})"
                ).format(raw=self.raw, s=self.staging, m=_match(key, "s", "r")),
                params,
            )
            self.result.loaded += cur.rowcount
        # ... then every entity without a current version gets one
        cur.execute(
            self._insert(
                True,
                sql.SQL(
                    "WHERE NOT EXISTS (SELECT 1 FROM {raw} r WHERE r._valid_to IS NULL AND {m})"
                ).format(raw=self.raw, m=_match(key, "r", "s")),
            ),
            params,
        )
        self.result.loaded += cur.rowcount

    # dataset checks ----------------------------------------------------------

    def dataset_checks(self, previous_rows: int | None, *, after_merge: bool) -> None:
        failed = []
        for check in quality.dataset_checks(self.spec):
            is_staleness = "staleness" in check
            if is_staleness != after_merge:
                continue
            found = quality.evaluate_dataset_check(
                self.cur, self.spec, check, staged=self.result.staged, previous=previous_rows
            )
            if found:
                level = quality.severity(check)
                self.result.events.append(
                    {"check_name": quality.check_name(check), "severity": level, "message": found}
                )
                if level == "error":
                    failed.append(f"{quality.check_name(check)}: {found}")
        if failed:
            raise QualityError(
                f"dataset {self.spec.name!r}: load not applied, check failed: " + "; ".join(failed)
            )


def load(
    db,
    spec: SourceSpec,
    chunks: Iterable[Chunk],
    *,
    run_id: int | None = None,
    cursor: Any = _KEEP,
    stream_watermark: str | None = None,
    mode: str = "incremental",
    time_range: tuple[datetime, datetime] | None = None,
    previous_rows: int | None = None,
    on_progress: Callable[[LoadResult], None] | None = None,
    strict: bool = False,
) -> LoadResult:
    """Stage ``chunks``, check them and merge them into raw in one transaction.

    ``mode``: incremental (upsert / new versions), full (atomic replace: rows gone from
    the source are deleted, or their versions closed for point_in_time), backfill (like
    incremental, limited to ``time_range``) or reprocess (rows of the chunks' origin runs
    are rewritten). The source ``cursor`` and the speed watermark ``stream_watermark``
    are written in the same transaction when given. Quality events are recorded whether
    or not the load applies; a failed ``error`` check raises QualityError.
    """
    if mode not in MODES:
        raise ValueError(f"unknown load mode {mode!r}")
    loader = None
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SET LOCAL timezone = 'UTC'")
            cur.execute(
                "INSERT INTO cxd.watermarks (dataset) VALUES (%s) ON CONFLICT DO NOTHING",
                (spec.name,),
            )
            conn.commit()
            # loads of one dataset are serialised here, so _seq grows in commit order
            cur.execute(
                "SELECT stream_id FROM cxd.watermarks WHERE dataset = %s FOR UPDATE", (spec.name,)
            )
            cur.execute("SET LOCAL timezone = 'UTC'")
            if not _tables_ready(cur, spec):
                ensure_tables(cur, spec)
            loader = _Loader(cur, spec, run_id, mode, strict=strict)
            # staging is emptied in the transaction that fills it, so it is empty here
            # unless something else wrote to it
            cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(loader.staging))
            if cur.fetchone()[0]:
                cur.execute(sql.SQL("TRUNCATE {}").format(loader.staging))
            try:
                for chunk in chunks:
                    loader.stage(chunk)
                    if on_progress:
                        on_progress(loader.result)
                loader.finish_staging()
            finally:
                loader.close()  # no COPY may outlive the transaction
            loader.dataset_checks(previous_rows, after_merge=False)
            since = time.perf_counter()
            loader.merge(time_range)
            loader._clock("merge", since)
            loader.dataset_checks(previous_rows, after_merge=True)
            _advance(cur, spec, run_id, cursor, stream_watermark)
            if loader.used_staging:
                cur.execute(sql.SQL("TRUNCATE {}").format(loader.staging))
    finally:
        if loader is not None and loader.result.events:
            record_events(db, spec.name, run_id, loader.result.events)
    return loader.result


def _tables_ready(cur, spec: SourceSpec) -> bool:
    """True when raw and staging already have every declared column with its type (one
    catalog query; :func:`ensure_tables` is only needed when this is False)."""
    cur.execute(
        "SELECT n.nspname, a.attname, format_type(a.atttypid, a.atttypmod), a.atthasdef"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname IN ('raw', 'staging')"
        " AND a.attnum > 0 AND NOT a.attisdropped",
        (spec.name,),
    )
    found = {(schema, name): (ctype, has_default) for schema, name, ctype, has_default in cur}
    for col in spec.columns:
        for schema in ("raw", "staging"):
            have = found.get((schema, col.name))
            if have is None or not same_type(col.type, have[0]):
                return False
    if not all(("staging", name) in found for name, _ in STAGING_ENGINE):
        return False
    return found.get(("raw", "_seq"), (None, False))[1]


def _advance(cur, spec: SourceSpec, run_id, cursor, stream_watermark) -> None:
    sets = ["updated_at = now()"]
    params: list[Any] = []
    if cursor is not _KEEP:
        sets += ["cursor = %s", "refreshed_at = now()"]
        params.append(json.dumps(cursor))
    if stream_watermark is not None:
        sets.append("stream_id = %s")
        params.append(stream_watermark)
    if run_id is not None:
        sets.append("last_run_id = %s")
        params.append(run_id)
    cur.execute(
        f"UPDATE cxd.watermarks SET {', '.join(sets)} WHERE dataset = %s", (*params, spec.name)
    )


def record_events(db, dataset: str, run_id: int | None, events: list[dict[str, str]]) -> None:
    """Write quality conditions to ``cxd.quality_events`` and the run's log."""
    with db.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO cxd.quality_events (dataset, run_id, check_name, severity, message) VALUES %s",
            [(dataset, run_id, e["check_name"], e["severity"], e["message"]) for e in events],
        )
        if run_id is not None:
            entries = [
                {**e, "message": f"quality {e['severity']}: {e['check_name']}: {e['message']}"}
                for e in events
            ]
            cur.execute(
                "UPDATE cxd.runs SET log = log || (SELECT jsonb_agg(jsonb_build_object('at', now()) || e)"
                " FROM jsonb_array_elements(%s::jsonb) e) WHERE id = %s",
                (json.dumps(entries), run_id),
            )
    for e in events:
        log.log(
            logging.ERROR if e["severity"] == "error" else logging.WARNING,
            "%s: %s: %s",
            dataset,
            e["check_name"],
            e["message"],
        )


def load_rows(
    db,
    spec: SourceSpec,
    rows: pd.DataFrame | Sequence[dict[str, Any]],
    *,
    run_id: int | None = None,
    cursor: Any = _KEEP,
    stream_ids: Sequence[str] | None = None,
    stream_watermark: str | None = None,
    mode: str = "incremental",
    strict: bool = False,
) -> int:
    """Merge ``rows`` into the dataset's raw table; return how many rows changed.

    In the same transaction, the source ``cursor`` (if given) and the speed-layer
    watermark ``stream_watermark`` (if given) are written. Rows that cannot be typed or
    fail a row check are quarantined and the rest load; with ``strict`` the whole load
    is refused instead (the speed loader finds and dead-letters such an event itself).
    """
    chunk = Chunk(rows, stream_ids=list(stream_ids) if stream_ids is not None else None)
    return load(
        db,
        spec,
        [chunk],
        run_id=run_id,
        cursor=cursor,
        stream_watermark=stream_watermark,
        mode=mode,
        strict=strict,
    ).loaded


def get_watermark(db, dataset: str) -> dict[str, Any]:
    """The dataset's committed watermark row (stream id W, cursor, last refresh)."""
    row = db.fetchone("SELECT * FROM cxd.watermarks WHERE dataset = %s", (dataset,))
    return row or {"dataset": dataset, "stream_id": "0-0", "cursor": None, "refreshed_at": None}

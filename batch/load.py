"""Loads: rows are typed and checked in chunks, go by COPY into staging, then merge into raw
in one transaction together with the watermark and the source cursor (invariant 2).

This module is the batch layer's write interface; the speed layer's hand-off calls
:func:`load_rows` with the stream ids of the events it loads. A load either applies
completely (rows, quarantined rows, cursor, watermark) or not at all.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import execute_values

from batch import quality
from batch.exceptions import LoadError, QualityError
from batch.partitions import ensure_months, ensure_partitions
from batch.tables import ensure_tables, raw_table, staging_table, unique_columns
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
        self.copy_sql = (
            sql.SQL(
                "COPY {} ({}, _stream_id, _ord, _run_id) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
            )
            .format(self.staging, _ident_list(self.cols))
            .as_string(cur.connection)
        )
        self.raw_copy_sql = (
            sql.SQL("COPY {} ({}, _stream_id, _run_id) FROM STDIN WITH (FORMAT csv, NULL '\\N')")
            .format(self.raw, _ident_list(self.cols))
            .as_string(cur.connection)
        )
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

    def stage(self, chunk: Chunk) -> None:
        if chunk.origin_run is not None:  # even with no rows: that run's rows are replaced
            self.origin_runs.add(chunk.origin_run)
        frame = to_frame(self.spec, chunk.rows)
        self.result.received += len(frame)
        for start, piece in split(frame):
            if len(piece):
                self._stage_piece(chunk, piece, chunk.first_position + start)

    def _clock(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.result.timings[name] = self.result.timings.get(name, 0) + int(1000 * (now - since))
        return now

    def _stage_piece(self, chunk: Chunk, piece: pd.DataFrame, first: int) -> None:
        # first trust Postgres to type the values (fast); if the COPY refuses one, type
        # the chunk here, quarantine what fails and COPY the rest
        seen = dict(self.checker._seen)
        trust = True
        direct = self.direct
        while True:
            since = time.perf_counter()
            typed, rejects = self.checker.check(piece, trust=trust)
            since = self._clock("typing", since)
            keep = np.ones(len(piece), dtype=bool)
            for pos in rejects.found:
                keep[pos] = False
            to_raw = direct and self._can_go_straight(typed[keep])
            try:
                self._copy(chunk, typed, keep, rejects, first, retry_lines=not trust, to_raw=to_raw)
                break
            except psycopg2.errors.DataError:
                if self.strict:
                    raise
                self.checker._seen = dict(seen)
                trust = False
            except psycopg2.errors.UniqueViolation:
                self.checker._seen = dict(seen)
                direct = False  # a key met an existing row: merge this chunk instead
        self._quarantine(chunk, piece, first, rejects)
        self._clock("copy", since)
        good_typed = typed[keep]
        self.result.staged += len(good_typed)
        if to_raw:
            self.result.loaded += len(good_typed)
        elif self.unique and len(good_typed):
            self._track_keys(good_typed)

    def _can_go_straight(self, typed: pd.DataFrame) -> bool:
        """True when ``typed`` may be COPYed into raw (creating the partitions it needs)."""
        t = self.spec.time_column
        if not t or not len(typed):
            return not self.unique
        times = pd.to_datetime(typed[t], errors="coerce", utc=True, format="ISO8601")
        if times.isna().any():
            return False  # let the staging path type and quarantine them
        if self.unique and self.raw_newest is not None:
            newest = pd.Timestamp(self.raw_newest)
            newest = newest.tz_localize("UTC") if newest.tzinfo is None else newest
            if times.min() <= newest:
                return False
        stamps = pd.unique(times.dt.year * 100 + times.dt.month)
        ensure_months(
            self.cur, self.spec, [datetime(int(m) // 100, int(m) % 100, 1) for m in stamps]
        )
        return True

    def _copy(
        self, chunk: Chunk, typed, keep, rejects, first: int, *, retry_lines: bool, to_raw: bool
    ) -> None:
        n = len(typed)
        out = typed.copy()
        offset = first - chunk.first_position
        out["_stream_id"] = (
            list(chunk.stream_ids[offset : offset + n]) if chunk.stream_ids is not None else None
        )
        if to_raw:
            out["_run_id"] = chunk.origin_run or self.run_id
        else:
            out["_ord"] = np.arange(self._ord, self._ord + n)
            out["_run_id"] = chunk.origin_run
        while True:
            self.cur.execute("SAVEPOINT copy_chunk")
            try:
                good = out[keep]
                if len(good):
                    self.cur.copy_expert(
                        self.raw_copy_sql if to_raw else self.copy_sql, self._buffer(good)
                    )
                self.cur.execute("RELEASE SAVEPOINT copy_chunk")
                break
            except psycopg2.errors.DataError as exc:
                self.cur.execute("ROLLBACK TO SAVEPOINT copy_chunk")
                found = _COPY_LINE.search(exc.diag.context or "")
                if not retry_lines or not found:
                    raise
                # a value our typing let through but Postgres refused: quarantine that row
                pos = int(np.flatnonzero(keep)[int(found.group(1)) - 1])
                keep[pos] = False
                rejects.found[pos] = (
                    f"type:{found.group(2) or 'row'}",
                    exc.diag.message_primary or str(exc),
                )
            except psycopg2.errors.UniqueViolation:
                self.cur.execute("ROLLBACK TO SAVEPOINT copy_chunk")
                raise
        self._ord += n

    def _buffer(self, frame: pd.DataFrame) -> io.StringIO:
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False, na_rep="\\N")
        buf.seek(0)
        return buf

    def _track_keys(self, typed: pd.DataFrame) -> None:
        self._key_hashes.append(
            pd.util.hash_pandas_object(typed[self.unique], index=False).to_numpy()
        )

    def _has_duplicate_keys(self) -> bool:
        """True when two staged rows share a key (then the merge deduplicates first)."""
        if not self._key_hashes:
            return False
        hashes = np.concatenate(self._key_hashes)
        return len(np.unique(hashes)) < len(hashes)

    def _quarantine(self, chunk: Chunk, piece: pd.DataFrame, first: int, rejects) -> None:
        if not rejects.found:
            return
        if self.strict:
            pos, (check, reason) = min(rejects.found.items())
            where = chunk.stream_ids[first + pos] if chunk.stream_ids else f"row {first + pos}"
            raise LoadError(f"{self.spec.name}: {where} fails {check}: {reason}")
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
            self._merge_append()

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
        others = [c for c in self.cols if c not in self.unique]
        stmt = self._insert()
        if self._appends_only():
            pass  # no ON CONFLICT arbiter needed: nothing in raw has these keys
        elif others:
            assign = sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                for c in [*others, "_stream_id"]
            )
            stmt += sql.SQL(
                " ON CONFLICT ({u}) DO UPDATE SET {a}, _seq = nextval('cxd.change_seq'),"
                " _ingested_at = now(), _run_id = EXCLUDED._run_id WHERE {w}"
            ).format(
                u=_ident_list(self.unique),
                a=assign,
                w=sql.SQL("({}) IS DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(
                        sql.SQL("{}.{}").format(self.raw, sql.Identifier(c)) for c in others
                    ),
                    sql.SQL(", ").join(
                        sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in others
                    ),
                ),
            )
        else:
            stmt += sql.SQL(" ON CONFLICT ({u}) DO NOTHING").format(u=_ident_list(self.unique))
        if self.mode == "full":
            self.cur.execute(
                sql.SQL(
                    "DELETE FROM {raw} r WHERE r._stream_id IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM {s} s WHERE {m})"
                ).format(raw=self.raw, s=self.staging, m=_match(self.unique, "s", "r"))
            )
            self.result.loaded += self.cur.rowcount
        self.cur.execute(stmt, {"run_id": self.run_id})
        self.result.loaded += self.cur.rowcount

    def _merge_append(self) -> None:
        if self.mode == "full":
            self.cur.execute(sql.SQL("DELETE FROM {} WHERE _stream_id IS NULL").format(self.raw))
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
            ensure_tables(cur, spec)
            loader = _Loader(cur, spec, run_id, mode, strict=strict)
            cur.execute(sql.SQL("TRUNCATE {}").format(loader.staging))
            for chunk in chunks:
                loader.stage(chunk)
                if on_progress:
                    on_progress(loader.result)
            loader.dataset_checks(previous_rows, after_merge=False)
            since = time.perf_counter()
            loader.merge(time_range)
            loader._clock("merge", since)
            loader.dataset_checks(previous_rows, after_merge=True)
            _advance(cur, spec, run_id, cursor, stream_watermark)
            cur.execute(sql.SQL("TRUNCATE {}").format(loader.staging))
    finally:
        if loader is not None and loader.result.events:
            record_events(db, spec.name, run_id, loader.result.events)
    return loader.result


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

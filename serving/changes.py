"""Changes since a cursor (``GET /api/datasets/{name}/changes``) across both layers.

A dataset's rows reach a reader two ways: from raw in Postgres (ordered by ``_seq``,
assigned in commit order because loads of a dataset are serialised) and, for live events
not yet handed off, from the Redis stream (ordered by stream id, above the watermark W).
A cursor is the pair (S, X): every raw row with ``_seq <= S`` and every live event with
stream id ``<= X`` has been returned. One page:

1. reads Redis first: events with id > X;
2. then takes one Postgres snapshot: W, the highest ``_seq``, and raw rows with
   ``_seq > S``, skipping rows whose ``_stream_id <= X`` (already returned from Redis
   before their hand-off);
3. returns raw rows first; only once raw is exhausted in the snapshot does it add the
   events read in step 1 with id > max(X, W) (those at or below W are in the snapshot).

The next cursor is (S', X') with S' >= S and X' >= X, so paging to the end returns every
row exactly once while loads and hand-offs run. Cursors are fixed-width hex, so they also
sort in the order they were handed out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from psycopg2 import sql
from psycopg2.extras import RealDictCursor

from cxd.catalog import get_source
from cxd.errors import BadInput
from cxd.stores import Stores
from serving.auth import needs
from speed.stream import high_water, parse_id, read_after

changes_api = Blueprint("changes_api", __name__, url_prefix="/api")

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_MAX_SEQ = 2**64 - 1  # the largest sequence part of a Redis stream id
_CURSOR = re.compile(r"^1([0-9a-f]{16})([0-9a-f]{16})([0-9a-f]{16})$")

StreamId = tuple[int, int]


def encode_cursor(seq: int, stream: StreamId) -> str:
    """The opaque cursor for (last ``_seq`` returned, last stream id returned)."""
    return f"1{seq:016x}{stream[0]:016x}{stream[1]:016x}"


def decode_cursor(cursor: str) -> tuple[int, StreamId]:
    """(S, X) of a cursor made by :func:`encode_cursor`; BadInput for anything else."""
    match = _CURSOR.match(cursor)
    if not match:
        raise BadInput(
            f"since={cursor!r} is neither a cursor from a previous page's 'next'"
            " nor an ISO 8601 timestamp",
            details={"parameter": "since"},
        )
    seq, ms, part = (int(g, 16) for g in match.groups())
    return seq, (ms, part)


def _stream_text(stream: StreamId) -> str:
    return f"{stream[0]}-{stream[1]}"


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _raw_exists(cur, dataset: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (f'raw."{dataset}"',))
    return bool(cur.fetchone()["ok"])


def cursor_at(stores: Stores, dataset: str, moment: datetime) -> str:
    """A cursor from which paging returns every change made at or after ``moment``.

    Live events count from their arrival in the speed layer (their stream id's time);
    batch rows from their ``_ingested_at``.
    """
    stream = (max(int(moment.timestamp() * 1000) - 1, 0), _MAX_SEQ)
    with stores.db.cursor(dict_rows=True) as cur:
        seq = 0
        if _raw_exists(cur, dataset):
            cur.execute(
                sql.SQL(
                    "SELECT coalesce(min(_seq) - 1, (SELECT max(_seq) FROM {t}), 0) AS s"
                    " FROM {t} WHERE _ingested_at >= %s"
                ).format(t=sql.Identifier("raw", dataset)),
                (moment,),
            )
            seq = int(cur.fetchone()["s"])
    return encode_cursor(seq, stream)


def end_cursor(stores: Stores, dataset: str) -> str:
    """The cursor at the dataset's current end: paging from it returns only later changes."""
    get_source(stores.db, dataset)
    high = parse_id(high_water(stores.redis, dataset))
    with stores.db.cursor(dict_rows=True) as cur:
        cur.execute("SELECT stream_id FROM cxd.watermarks WHERE dataset = %s", (dataset,))
        mark = cur.fetchone()
        top = 0
        if _raw_exists(cur, dataset):
            cur.execute(
                sql.SQL("SELECT coalesce(max(_seq), 0) AS top FROM {}").format(
                    sql.Identifier("raw", dataset)
                )
            )
            top = int(cur.fetchone()["top"])
    return encode_cursor(top, max(high, parse_id(mark["stream_id"]) if mark else (0, 0)))


def resolve_since(stores: Stores, dataset: str, since: str | None) -> tuple[int, StreamId]:
    """(S, X) for a ``since`` parameter: empty (the beginning), a cursor or an ISO time."""
    if not since:
        return 0, (0, 0)
    if not _CURSOR.match(since):
        moment = _parse_time(since)
        if moment is not None:
            since = cursor_at(stores, dataset, moment)
    return decode_cursor(since)


def _speed_row(stream_id: str, record: dict[str, Any]) -> dict[str, Any]:
    ms, _ = parse_id(stream_id)
    return {
        **record,
        "_seq": None,
        "_ingested_at": datetime.fromtimestamp(ms / 1000, UTC),
        "_run_id": None,
        "_stream_id": stream_id,
    }


def read_changes(
    stores: Stores, dataset: str, since: str | None = None, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """One page of changes after ``since``: ``{"rows", "next", "freshness"}``."""
    get_source(stores.db, dataset)  # NotFound names an unknown dataset
    seq, stream = resolve_since(stores, dataset, since)
    # Redis first ...
    high = high_water(stores.redis, dataset)
    live = read_after(stores.redis, dataset, _stream_text(stream), count=limit + 1)
    # ... then one Postgres snapshot that includes W
    with stores.db.connection() as conn:
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT stream_id FROM cxd.watermarks WHERE dataset = %s", (dataset,))
            mark = cur.fetchone()
            watermark = parse_id(mark["stream_id"]) if mark else (0, 0)
            rows: list[dict[str, Any]] = []
            top = 0
            if _raw_exists(cur, dataset):
                table = sql.Identifier("raw", dataset)
                cur.execute(sql.SQL("SELECT coalesce(max(_seq), 0) AS top FROM {}").format(table))
                top = int(cur.fetchone()["top"])
                cur.execute(
                    sql.SQL(
                        "SELECT * FROM {} WHERE _seq > %(seq)s AND (_stream_id IS NULL OR"
                        " (split_part(_stream_id, '-', 1)::numeric,"
                        "  split_part(_stream_id, '-', 2)::numeric) > (%(ms)s, %(part)s))"
                        " ORDER BY _seq LIMIT %(limit)s"
                    ).format(table),
                    {"seq": seq, "ms": stream[0], "part": stream[1], "limit": limit},
                )
                rows = [dict(r) for r in cur.fetchall()]
        conn.rollback()
    if len(rows) == limit:  # raw not exhausted: the live part waits for a later page
        next_seq, next_stream = rows[-1]["_seq"], stream
    else:
        floor = max(stream, watermark)
        fresh = [(eid, rec) for eid, rec in live if parse_id(eid) > floor]
        taken = fresh[: limit - len(rows)]
        rows += [_speed_row(eid, rec) for eid, rec in taken]
        next_seq = max(seq, top)
        next_stream = max(floor, parse_id(taken[-1][0])) if taken else floor
    batch_watermark = _stream_text(watermark)
    return {
        "rows": rows,
        "next": encode_cursor(next_seq, next_stream),
        "freshness": {
            "plan": "merge",
            "batch_watermark": batch_watermark,
            "speed_high_water": high,
            "stale": False,
            "datasets": {
                dataset: {
                    "layer": "merge",
                    "batch_watermark": batch_watermark,
                    "speed_high_water": high,
                }
            },
        },
    }


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise BadInput(
            f"limit must be a whole number from 1 to {MAX_LIMIT}; got {text!r}",
            details={"parameter": "limit"},
        )
    return value


@changes_api.get("/datasets/<name>/changes")
@needs("read")
def changes(name: str):
    """Rows changed after ``since`` (a cursor or an ISO time), oldest first, both layers."""
    stores: Stores = current_app.extensions["cxd.stores"]
    page = read_changes(stores, name, request.args.get("since"), _limit(request.args.get("limit")))
    return jsonify(page)

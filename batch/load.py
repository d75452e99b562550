"""Loads: rows go by COPY into staging, then merge into raw in one transaction together
with the watermark and the source cursor (invariant 2).

This module is the batch layer's write interface; the speed layer's hand-off calls
:func:`load_rows` with the stream ids of the events it loads.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from psycopg2 import sql

from batch.tables import ensure_tables, raw_table, staging_table, unique_columns
from cxd.catalog import SourceSpec

_KEEP = object()


def to_frame(spec: SourceSpec, rows: pd.DataFrame | Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the declared columns (missing ones are null)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for name in spec.column_names:
        if name not in frame.columns:
            frame[name] = None
    return frame[spec.column_names]


def _copy_buffer(frame: pd.DataFrame) -> io.StringIO:
    buf = io.StringIO()
    out = frame.astype(object).where(frame.notna(), None)
    for col in out.columns:
        out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
    out.to_csv(buf, index=False, header=False, na_rep="\\N")
    buf.seek(0)
    return buf


def load_rows(
    db,
    spec: SourceSpec,
    rows: pd.DataFrame | Sequence[dict[str, Any]],
    *,
    run_id: int | None = None,
    cursor: Any = _KEEP,
    stream_ids: Sequence[str] | None = None,
    stream_watermark: str | None = None,
) -> int:
    """Merge ``rows`` into the dataset's raw table; return how many rows changed.

    In the same transaction, the source ``cursor`` (if given) and the speed-layer
    watermark ``stream_watermark`` (if given) are written. Loads of one dataset are
    serialised by a row lock on its watermark, so ``_seq`` grows in commit order.
    """
    frame = to_frame(spec, rows)
    if stream_ids is not None:
        frame = frame.assign(_stream_id=list(stream_ids))
    else:
        frame = frame.assign(_stream_id=None)
    cols = spec.column_names
    ident = sql.SQL(", ").join(map(sql.Identifier, cols))
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO cxd.watermarks (dataset) VALUES (%s) ON CONFLICT DO NOTHING", (spec.name,)
        )
        cur.execute(
            "SELECT stream_id FROM cxd.watermarks WHERE dataset = %s FOR UPDATE", (spec.name,)
        )
        ensure_tables(cur, spec)
        cur.execute(sql.SQL("TRUNCATE {}").format(staging_table(spec.name)))
        if len(frame):
            cur.copy_expert(
                sql.SQL("COPY {} ({}, _stream_id) FROM STDIN WITH (FORMAT csv, NULL '\\N')")
                .format(staging_table(spec.name), ident)
                .as_string(conn),
                _copy_buffer(frame),
            )
        unique = unique_columns(spec)
        select = sql.SQL("SELECT {}, _stream_id FROM {}").format(ident, staging_table(spec.name))
        if unique:
            # last row per key wins (later stream id, else later position in the file)
            uniq = sql.SQL(", ").join(map(sql.Identifier, unique))
            select = sql.SQL(
                "SELECT DISTINCT ON ({u}) {c}, _stream_id FROM {s} ORDER BY {u}, _stream_id DESC NULLS LAST, ctid DESC"
            ).format(u=uniq, c=ident, s=staging_table(spec.name))
        insert = sql.SQL(
            "INSERT INTO {raw} ({c}, _stream_id, _seq, _run_id)"
            " SELECT s.*, nextval('cxd.change_seq'), %(run_id)s FROM ({select}) s"
        ).format(raw=raw_table(spec.name), c=ident, select=select)
        if unique:
            others = [c for c in cols if c not in unique]
            if others:
                assign = sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                    for c in [*others, "_stream_id"]
                )
                changed = sql.SQL("({}) IS DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(
                        sql.SQL("{}.{}").format(raw_table(spec.name), sql.Identifier(c))
                        for c in others
                    ),
                    sql.SQL(", ").join(
                        sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in others
                    ),
                )
                insert += sql.SQL(
                    " ON CONFLICT ({u}) DO UPDATE SET {a}, _seq = nextval('cxd.change_seq'),"
                    " _ingested_at = now(), _run_id = EXCLUDED._run_id WHERE {w}"
                ).format(u=sql.SQL(", ").join(map(sql.Identifier, unique)), a=assign, w=changed)
            else:
                insert += sql.SQL(" ON CONFLICT ({u}) DO NOTHING").format(
                    u=sql.SQL(", ").join(map(sql.Identifier, unique))
                )
        cur.execute(insert, {"run_id": run_id})
        changed_rows = cur.rowcount
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
        cur.execute(sql.SQL("TRUNCATE {}").format(staging_table(spec.name)))
    return changed_rows


def get_watermark(db, dataset: str) -> dict[str, Any]:
    """The dataset's committed watermark row (stream id W, cursor, last refresh)."""
    row = db.fetchone("SELECT * FROM cxd.watermarks WHERE dataset = %s", (dataset,))
    return row or {"dataset": dataset, "stream_id": "0-0", "cursor": None, "refreshed_at": None}

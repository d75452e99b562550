"""Execution in the order that makes merged answers exact (invariant 1): read Redis first,
then take one Postgres snapshot, read the watermark W in it, keep speed rows above W."""

from __future__ import annotations

import json
from typing import Any

from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from cxd.stores import Stores
from query_router.plan import Plan
from query_router.rewrite_merge import speed_param
from speed.stream import high_water, parse_id, read_after

STATEMENT_TIMEOUT_MS = 30_000
ROW_CAP = 100_000

# Postgres type OIDs -> names for result column types
_OID_TYPES = {
    16: "boolean", 20: "bigint", 21: "smallint", 23: "integer", 25: "text", 700: "real",
    701: "double precision", 1700: "numeric", 1082: "date", 1114: "timestamp",
    1184: "timestamptz", 1043: "text", 3802: "jsonb", 114: "json", 2950: "uuid", 19: "text",
}  # fmt: skip


def execute(
    stores: Stores, plan: Plan, values: dict[str, Any], *, row_cap: int = ROW_CAP
) -> dict[str, Any]:
    """Run a planned query; return columns, rows and freshness."""
    live = [name for name, layer in plan.layers.items() if layer != "batch"]
    speed_rows: dict[str, list[tuple[str, dict]]] = {}
    high: dict[str, str] = {}
    for name in live:  # Redis first ...
        high[name] = high_water(stores.redis, name)
        speed_rows[name] = read_after(stores.redis, name, "0-0")
    sql = plan.expression.sql(dialect="postgres")
    with stores.db.connection() as conn:
        assert conn.get_transaction_status() == TRANSACTION_STATUS_IDLE
        with conn.cursor() as cur:
            # ... then one snapshot that includes W
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SET LOCAL statement_timeout = %s", (STATEMENT_TIMEOUT_MS,))
            cur.execute(
                "SELECT dataset, stream_id, refreshed_at FROM cxd.watermarks WHERE dataset = ANY(%s)",
                (list(plan.datasets),),
            )
            marks = {r[0]: {"stream_id": r[1], "refreshed_at": r[2]} for r in cur.fetchall()}
            params = dict(values)
            for name in live:
                w = parse_id(marks.get(name, {}).get("stream_id", "0-0"))
                rows = [rec for eid, rec in speed_rows[name] if parse_id(eid) > w]
                params[speed_param(name)] = json.dumps(rows, default=str)
            cur.execute(sql, params)
            columns = [
                {"name": d.name, "type": _OID_TYPES.get(d.type_code, "text")}
                for d in cur.description
            ]
            data = cur.fetchmany(row_cap + 1)
        conn.rollback()
    names = [c["name"] for c in columns]
    return {
        "columns": columns,
        "rows": [dict(zip(names, row, strict=True)) for row in data[:row_cap]],
        "truncated": len(data) > row_cap,
        "freshness": freshness(plan, marks, high),
    }


def freshness(plan: Plan, marks: dict[str, dict], high: dict[str, str]) -> dict[str, Any]:
    """How fresh an answer is: batch watermark, speed high-water mark, plan (invariant 6)."""
    datasets = {
        name: {
            "layer": plan.layers.get(name, "batch"),
            "batch_watermark": marks.get(name, {}).get("stream_id", "0-0"),
            "refreshed_at": marks.get(name, {}).get("refreshed_at"),
            "speed_high_water": high.get(name),
        }
        for name in plan.datasets
    }
    first = next(iter(datasets.values()), {})
    return {
        "plan": plan.layer,
        "batch_watermark": first.get("batch_watermark"),
        "speed_high_water": max(high.values(), key=parse_id) if high else None,
        "stale": False,
        "datasets": datasets,
    }

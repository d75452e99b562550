"""Replay: rebuild the speed layer's latest values from raw after Redis lost them.

raw holds every event up to the watermark W; the stream holds the events above W. The
latest value of an entity is its newest raw row (by time column, then load order),
overlaid with the stream's events above W in stream order -- the same answer append
would have built had Redis never been lost.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg2 import sql

from batch.load import get_watermark
from batch.tables import raw_table
from cxd.catalog import get_source
from cxd.errors import BadInput
from cxd.stores import Stores
from cxd.web import to_json_value
from speed.keys import latest_key, notify_channel
from speed.stream import entity_key, parse_id, read_after


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | dict | list):
        return value
    return to_json_value(value)


def rebuild_latest(stores: Stores, dataset: str) -> int:
    """Rebuild ``cxd:{ds}:latest`` from raw and the stream; return how many entities it holds."""
    spec = get_source(stores.db, dataset)
    if not spec.key:
        raise BadInput(f"dataset {dataset!r} declares no key, so it has no latest values")
    events = read_after(stores.redis, dataset, "0-0")  # Redis first (invariant 1)
    w = get_watermark(stores.db, dataset)["stream_id"]
    keys = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    order = [sql.Identifier(c) for c in spec.key]
    if spec.time_column:
        order.append(sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(spec.time_column)))
    order.append(sql.SQL("_seq DESC"))
    cols = sql.SQL(", ").join(map(sql.Identifier, spec.column_names))
    query = sql.SQL("SELECT DISTINCT ON ({k}) {c} FROM {t} ORDER BY {o}").format(
        k=keys, c=cols, t=raw_table(dataset), o=sql.SQL(", ").join(order)
    )
    with stores.db.cursor(dict_rows=True) as cur:
        cur.execute("SELECT to_regclass(%s) AS t", (f'raw."{dataset}"',))
        rows = [] if cur.fetchone()["t"] is None else (cur.execute(query) or cur.fetchall())
    latest: dict[str, str] = {}
    for row in rows:
        record = {k: _jsonable(v) for k, v in dict(row).items()}
        latest[entity_key(record, spec.key)] = json.dumps(record, default=str)
    for eid, record in events:
        if parse_id(eid) > parse_id(w):
            latest[entity_key(record, spec.key)] = json.dumps(record, default=str)
    tmp = latest_key(dataset) + ":rebuild"
    pipe = stores.redis.pipeline(transaction=True)
    pipe.delete(tmp)
    items = list(latest.items())
    for i in range(0, len(items), 10_000):
        pipe.hset(tmp, mapping=dict(items[i : i + 10_000]))
    if items:
        pipe.rename(tmp, latest_key(dataset))  # readers see the old or the new hash, whole
    else:
        pipe.delete(latest_key(dataset))
    pipe.publish(notify_channel(dataset), "speed")
    pipe.execute()
    return len(latest)

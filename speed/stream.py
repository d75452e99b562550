"""The speed layer's write and read interface.

Write: :func:`append` adds events to the dataset's stream in one pipelined round trip
and returns their stream ids only once Redis has them. Read (for the query router):
:func:`read_after` returns the events above a watermark, :func:`high_water` the newest id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from speed.keys import latest_key, log_key, notify_channel

FIELD = b"d"


def parse_id(stream_id: str | bytes) -> tuple[int, int]:
    """A stream id as a comparable (milliseconds, sequence) pair."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def append(
    client: redis.Redis,
    dataset: str,
    records: Sequence[dict[str, Any]],
    *,
    key_columns: Sequence[str] = (),
) -> list[str]:
    """Add ``records`` to the dataset's stream (and latest values); return their ids."""
    if not records:
        return []
    pipe = client.pipeline(transaction=False)
    for record in records:
        pipe.xadd(log_key(dataset), {FIELD: json.dumps(record, default=str, separators=(",", ":"))})
    if key_columns:
        latest: dict[str, str] = {}
        for record in records:  # once per key per batch: the last record of the batch wins
            entity = json.dumps([record.get(k) for k in key_columns], default=str)
            latest[entity] = json.dumps(record, default=str)
        pipe.hset(latest_key(dataset), mapping=latest)
    pipe.publish(notify_channel(dataset), "speed")
    results = pipe.execute()
    return [r.decode() if isinstance(r, bytes) else r for r in results[: len(records)]]


def read_after(
    client: redis.Redis, dataset: str, after: str, count: int | None = None
) -> list[tuple[str, dict]]:
    """Events with stream id > ``after``, oldest first, as (id, record)."""
    entries = client.xrange(
        log_key(dataset), min=f"({after}" if after != "0-0" else "-", count=count
    )
    return [(eid.decode(), json.loads(fields[FIELD])) for eid, fields in entries]


def high_water(client: redis.Redis, dataset: str) -> str:
    """The newest stream id ever added to the dataset's stream (``0-0`` if none)."""
    try:
        info = client.xinfo_stream(log_key(dataset))
    except redis.ResponseError:
        return "0-0"
    last = info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0"
    return last.decode() if isinstance(last, bytes) else last


def latest(client: redis.Redis, dataset: str) -> list[dict]:
    """The latest record of every entity of an instantaneous dataset."""
    return [json.loads(v) for v in client.hgetall(latest_key(dataset)).values()]


def backlog(client: redis.Redis, dataset: str) -> int:
    """How many events are in the stream (not yet trimmed after loading)."""
    return int(client.xlen(log_key(dataset)))


def forget(client: redis.Redis, dataset: str) -> int:
    """Delete every speed-layer key of ``dataset`` (stream, latest values, counters...)."""
    keys = list(client.scan_iter(match=f"cxd:{{{dataset}}}:*", count=1000))
    return int(client.delete(*keys)) if keys else 0

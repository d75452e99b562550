"""Atomic counters with the time of their last change, per dataset (e.g. occupancy counts).

A counter changes atomically with its timestamp (one Lua script), so a reader never sees
a value without the moment it was reached. Counters declared on a source
(``speed: {counters: {occupancy: {by: delta, group: [room]}}}``) are incremented by
:func:`speed.stream.append` in the same script that appends the events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

from speed.keys import counters_at_key, counters_key, notify_channel

_INCR = """
local value = redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2])
local at = ARGV[3]
if at == '' then
  local now = redis.call('TIME')
  at = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
redis.call('HSET', KEYS[2], ARGV[1], at)
redis.call('PUBLISH', ARGV[4], 'speed')
return {value, at}
"""


def _number(text: bytes | str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def _moment(ms: bytes | str | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, UTC)


def counter_name(name: str, group: dict[str, Any] | None = None) -> str:
    """The stored name of counter ``name`` for one group, e.g. ``occupancy:["hall"]``."""
    if not group:
        return name
    return f"{name}:{json.dumps(list(group.values()), default=str)}"


def incr(
    client: redis.Redis, dataset: str, name: str, by: float = 1, *, at: datetime | None = None
) -> dict[str, Any]:
    """Add ``by`` to a counter (negative to decrease); return ``{"value", "at"}`` after it.

    ``at`` is the time of the change (default: Redis's clock).
    """
    stamp = "" if at is None else str(int(at.timestamp() * 1000))
    value, ms = client.eval(
        _INCR, 2, counters_key(dataset), counters_at_key(dataset),
        name, repr(float(by)), stamp, notify_channel(dataset),
    )  # fmt: skip
    return {"value": _number(value), "at": _moment(ms)}


def get(client: redis.Redis, dataset: str, name: str) -> dict[str, Any] | None:
    """One counter as ``{"value", "at"}``, or None if it was never changed."""
    pipe = client.pipeline(transaction=True)  # value and time from the same instant
    pipe.hget(counters_key(dataset), name)
    pipe.hget(counters_at_key(dataset), name)
    value, ms = pipe.execute()
    return None if value is None else {"value": _number(value), "at": _moment(ms)}


def all_counters(client: redis.Redis, dataset: str) -> dict[str, dict[str, Any]]:
    """Every counter of a dataset: name -> ``{"value", "at"}``."""
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(counters_key(dataset))
    pipe.hgetall(counters_at_key(dataset))
    values, stamps = pipe.execute()
    return {
        k.decode(): {"value": _number(v), "at": _moment(stamps.get(k))} for k, v in values.items()
    }


def reset(client: redis.Redis, dataset: str, name: str) -> None:
    """Remove a counter (it starts again from 0)."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(counters_key(dataset), name)
    pipe.hdel(counters_at_key(dataset), name)
    pipe.execute()

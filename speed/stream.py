"""The speed layer's write and read interface.

Write: :func:`append` adds a batch of events to the dataset's stream ``cxd:{ds}:log``,
updates the latest value per entity (once per key per batch) and the dataset's counters,
counts them into the unloaded backlog and publishes "speed" on the dataset's channel --
all in one Lua script, so one round trip, atomic, and refused as a whole (Backpressure)
when the backlog would pass the dataset's cap. It returns the stream ids only once Redis
has the events (and, in durable mode, once they are fsynced to the append-only file).

Read (for the query router): :func:`read_after` gives the events above a watermark,
optionally bounded by event time; :func:`latest` the latest values; :func:`high_water`
the newest stream id.

Invariant 1 (exactly once across layers) for readers: read Redis **first**
(``read_after(client, ds, "0-0")`` or from any id at or below the watermark you will
use), **then** take one Postgres snapshot and read the watermark W in it; answer with
raw rows whose ``_stream_id`` <= W plus the Redis events with id > W. This is exact
because the loader commits rows and W together and trims the stream only below an
already committed W: every event above the W a reader sees in Postgres was either in
Redis when the reader looked, or was appended afterwards (and is then in neither part of
the answer, or in raw only -- never in both). Reading Postgres first would be wrong: the
loader could commit and trim in between, and those events would be in neither part.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import redis

from speed.exceptions import Backpressure
from speed.keys import (
    backlog_key,
    counters_at_key,
    counters_key,
    latest_key,
    log_key,
    notify_channel,
)

if TYPE_CHECKING:
    from cxd.catalog import SourceSpec

FIELD = b"d"
DEFAULT_MAX_BACKLOG = 1_000_000
RETRY_AFTER_SECONDS = 2

_APPEND = """
local cap = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
local c = tonumber(ARGV[4])
local backlog = tonumber(redis.call('GET', KEYS[2]) or '0')
if cap > 0 and backlog + n > cap then
  return redis.error_reply('CXDBACKPRESSURE ' .. backlog)
end
local base = 5
local ids = {}
for i = 1, n do
  ids[i] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[base + i])
end
redis.call('INCRBY', KEYS[2], n)
base = base + n
for i = 0, m - 1 do
  redis.call('HSET', KEYS[3], ARGV[base + 2 * i + 1], ARGV[base + 2 * i + 2])
end
base = base + 2 * m
if c > 0 then
  local now = redis.call('TIME')
  local at = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  for i = 0, c - 1 do
    redis.call('HINCRBYFLOAT', KEYS[4], ARGV[base + 2 * i + 1], ARGV[base + 2 * i + 2])
    redis.call('HSET', KEYS[5], ARGV[base + 2 * i + 1], at)
  end
end
redis.call('PUBLISH', ARGV[5], 'speed')
return ids
"""
_APPEND_SHA: str | None = None


def parse_id(stream_id: str | bytes) -> tuple[int, int]:
    """A stream id as a comparable (milliseconds, sequence) pair."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _dumps(record: Any) -> bytes:
    # orjson: the write path spends most of its Python time here (timestamps become ISO 8601)
    return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS)


def entity_key(record: dict[str, Any], key_columns: Sequence[str]) -> str:
    """The field of ``cxd:{ds}:latest`` holding the latest record of ``record``'s entity."""
    return json.dumps([record.get(k) for k in key_columns], default=str)


def speed_options(spec: SourceSpec | None) -> dict[str, Any]:
    """The dataset's ``speed:`` settings with their defaults filled in."""
    from speed.durability import durable_default

    opts = dict(spec.speed or {}) if spec is not None else {}
    return {
        "max_backlog": int(opts.get("max_backlog", DEFAULT_MAX_BACKLOG)),
        "durable": bool(opts.get("durable", False)) or durable_default(),
        "counters": opts.get("counters") or {},
        "grace": opts.get("grace", "5s"),
    }


def counter_deltas(counters: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per counter field, the sum of increments a batch of records adds.

    ``counters`` is the ``speed.counters`` mapping of a dataset: ``name: {by: COLUMN or
    NUMBER, group: [COLUMNS]}``; a counter with ``group`` keeps one value per group,
    named ``name:["value", ...]``.
    """
    deltas: dict[str, float] = {}
    for name, conf in counters.items():
        conf = conf or {}
        by = conf.get("by", 1)
        group = conf.get("group") or ()
        for i, record in enumerate(records):
            step = record.get(by) if isinstance(by, str) else by
            if step is None:
                continue
            try:
                step = float(step)
            except (TypeError, ValueError):
                from cxd.errors import BadInput

                raise BadInput(
                    f"record {i}: counter {name!r} counts by {by!r}, which is {step!r}, not a number"
                ) from None
            fieldname = f"{name}:{entity_key(record, group)}" if group else name
            deltas[fieldname] = deltas.get(fieldname, 0.0) + step
    return deltas


def _run_append(client: redis.Redis, keys: list[str], args: list[Any], durable: bool) -> list[Any]:
    global _APPEND_SHA
    if _APPEND_SHA is None:
        _APPEND_SHA = client.script_load(_APPEND)
    waitaof = False
    if durable:
        from speed.durability import durable_persistence

        waitaof = durable_persistence(client).waitaof
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(_APPEND_SHA, len(keys), *keys, *args)
        if waitaof:
            # WAITAOF waits for this connection's writes: the pipeline keeps one connection
            from speed.durability import WAITAOF_TIMEOUT_MS

            pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
        results = pipe.execute(raise_on_error=False)
        first = results[0]
        if isinstance(first, redis.exceptions.NoScriptError):
            _APPEND_SHA = client.script_load(_APPEND)  # Redis restarted or SCRIPT FLUSH
            continue
        if isinstance(first, Exception):
            raise first
        if waitaof:
            from speed.durability import check_waitaof

            if isinstance(results[1], Exception):
                raise results[1]
            check_waitaof(results[1])
        return first
    raise redis.exceptions.NoScriptError("the append script vanished twice")


def append(
    client: redis.Redis,
    dataset: str,
    records: Sequence[dict[str, Any]],
    *,
    key_columns: Sequence[str] = (),
    spec: SourceSpec | None = None,
    max_backlog: int | None = None,
    durable: bool | None = None,
) -> list[str]:
    """Add ``records`` to the dataset's stream (and latest values, counters); return their ids.

    ``spec`` supplies the dataset's ``speed:`` settings (``max_backlog``, ``durable``,
    ``counters``) and, for instantaneous datasets, the key columns of the latest values;
    ``max_backlog`` / ``durable`` override them. Raises Backpressure (503, ``retry_after``)
    when the unloaded backlog would pass the cap; nothing of the batch is stored then.
    """
    if not records:
        return []
    opts = speed_options(spec)
    if spec is not None and not key_columns and spec.kind == "instantaneous":
        key_columns = spec.key
    cap = opts["max_backlog"] if max_backlog is None else max_backlog
    durable = opts["durable"] if durable is None else durable
    if cap and len(records) > cap:
        from cxd.errors import BadInput

        raise BadInput(
            f"a batch of {len(records)} events is larger than dataset {dataset!r}'s backlog "
            f"cap of {cap}; send smaller batches"
        )
    payloads = [_dumps(r) for r in records]
    latest: dict[str, str] = {}
    if key_columns:
        for record, payload in zip(records, payloads, strict=True):
            # once per key per batch: the last record of the batch wins
            latest[entity_key(record, key_columns)] = payload
    deltas = counter_deltas(opts["counters"], records)
    keys = [
        log_key(dataset),
        backlog_key(dataset),
        latest_key(dataset),
        counters_key(dataset),
        counters_at_key(dataset),
    ]
    args: list[Any] = [cap or 0, len(payloads), len(latest), len(deltas), notify_channel(dataset)]
    args += payloads
    for pair in latest.items():
        args += pair
    for name, delta in deltas.items():
        args += (name, repr(delta))
    try:
        ids = _run_append(client, keys, args, durable)
    except redis.ResponseError as exc:
        if str(exc).startswith("CXDBACKPRESSURE"):
            waiting = int(str(exc).split()[1])
            raise Backpressure(
                f"dataset {dataset!r} has {waiting} events waiting to be loaded (cap {cap}); "
                f"retry in {RETRY_AFTER_SECONDS}s",
                retry_after=RETRY_AFTER_SECONDS,
                details={"backlog": waiting, "max_backlog": cap},
            ) from None
        raise
    return [r.decode() if isinstance(r, bytes) else r for r in ids]


def _as_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_after(
    client: redis.Redis,
    dataset: str,
    after: str,
    count: int | None = None,
    *,
    time_column: str | None = None,
    start: Any = None,
    end: Any = None,
) -> list[tuple[str, dict]]:
    """Events with stream id > ``after``, oldest first, as (id, record).

    With ``time_column``, only events whose event time is >= ``start`` and < ``end`` (either
    bound may be None) are returned; events whose time cannot be read are kept, so a bound
    never hides data the caller would otherwise see. ``count`` limits the entries read.
    Late events (old event time, new stream id) are included: the boundary between the
    layers is the stream id, never the event time.
    """
    entries = client.xrange(
        log_key(dataset), min=f"({after}" if after != "0-0" else "-", count=count
    )
    out = [(eid.decode(), orjson.loads(fields[FIELD])) for eid, fields in entries]
    if time_column and (start is not None or end is not None):
        lo, hi = _as_time(start), _as_time(end)
        kept = []
        for eid, rec in out:
            moment = _as_time(rec.get(time_column))
            if moment is None or ((lo is None or moment >= lo) and (hi is None or moment < hi)):
                kept.append((eid, rec))
        out = kept
    return out


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
    """How many appended events the loader has not yet committed to Postgres and acknowledged."""
    return max(0, int(client.get(backlog_key(dataset)) or 0))


def forget(client: redis.Redis, dataset: str) -> int:
    """Delete every speed-layer key of ``dataset`` (stream, latest values, counters...)."""
    keys = list(client.scan_iter(match=f"cxd:{{{dataset}}}:*", count=1000))
    return int(client.delete(*keys)) if keys else 0

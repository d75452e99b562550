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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

# One script per append: the idempotency checks, the XADDs, the latest values, the counters
# and the recording of the ids happen together or not at all, so a retried request can
# never store an event twice, whatever died between its attempts.
#
# KEYS: 1 log, 2 backlog, 3 latest, 4 counters, 5 counters_at,
#       6 the request's key (the log key when there is none), 7.. event-id keys
# ARGV: 1 cap, 2 n records, 3 channel, 4 ttl ms, 5 '1' with a request key, 6 m latest
#       entries, 7 c counter entries; then n x (payload, index of its event-id key or 0);
#       then m x (owner, field, value); then c x (owner, counter, delta). An owner is the
#       record an entry belongs to (it applies only if that record is new) or 0 (always).
_APPEND = """
local cap, n, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local m, c = tonumber(ARGV[6]), tonumber(ARGV[7])
if ARGV[5] == '1' then
  local answer = redis.call('GET', KEYS[6])
  if answer then return {1, answer, 0} end
end
local base = 7
local fresh, ids, first, new = {}, {}, {}, 0
for i = 1, n do
  local k = tonumber(ARGV[base + 2 * i])
  if k == 0 then
    fresh[i] = true
    new = new + 1
  elseif first[k] then
    ids[i] = first[k]
  else
    local prior = redis.call('GET', KEYS[k])
    if prior then
      ids[i], first[k] = prior, prior
    else
      fresh[i], first[k] = true, i
      new = new + 1
    end
  end
end
local backlog = tonumber(redis.call('GET', KEYS[2]) or '0')
if cap > 0 and backlog + new > cap then
  return redis.error_reply('CXDBACKPRESSURE ' .. backlog)
end
for i = 1, n do
  if fresh[i] then
    ids[i] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[base + 2 * i - 1])
    local k = tonumber(ARGV[base + 2 * i])
    if k > 0 then
      redis.call('SET', KEYS[k], ids[i], 'PX', ttl)
    end
  end
end
for i = 1, n do
  if type(ids[i]) == 'number' then ids[i] = ids[ids[i]] end
end
base = base + 2 * n
if new > 0 then
  redis.call('INCRBY', KEYS[2], new)
  local fields, values = {}, {}
  for j = 0, m - 1 do
    local owner = tonumber(ARGV[base + 3 * j + 1])
    if owner == 0 or fresh[owner] then
      local f = ARGV[base + 3 * j + 2]
      if values[f] == nil then fields[#fields + 1] = f end
      values[f] = ARGV[base + 3 * j + 3]
    end
  end
  for _, f in ipairs(fields) do redis.call('HSET', KEYS[3], f, values[f]) end
  base = base + 3 * m
  local at = nil
  for j = 0, c - 1 do
    local owner = tonumber(ARGV[base + 3 * j + 1])
    if owner == 0 or fresh[owner] then
      if at == nil then
        local now = redis.call('TIME')
        at = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
      end
      redis.call('HINCRBYFLOAT', KEYS[4], ARGV[base + 3 * j + 2], ARGV[base + 3 * j + 3])
      redis.call('HSET', KEYS[5], ARGV[base + 3 * j + 2], at)
    end
  end
  redis.call('PUBLISH', ARGV[3], 'speed')
end
local answer = table.concat(ids, ',')
if ARGV[5] == '1' then redis.call('SET', KEYS[6], answer, 'PX', ttl) end
return {0, answer, new}
"""
_APPEND_SHA: str | None = None
DEDUP_TTL = 86400.0


@dataclass
class Appended:
    """What :func:`append_once` did: the stream id of every record (a repeat gets the id it
    was first stored under), how many were stored now, and whether the whole request was
    a repeat of an earlier one (its ``request_id`` was seen)."""

    ids: list[str | None]
    stored: int
    replayed: bool = False

    @property
    def duplicates(self) -> int:
        """Records of the call that were not stored by it (stored before)."""
        return len(self.ids) - self.stored


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


def _run_append(
    client: redis.Redis,
    keys: list[str],
    args: list[Any],
    durable: bool,
    also: Callable[[Any], None] | None = None,
) -> list[Any]:
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
        if also is not None:
            also(pipe)  # the caller's own bookkeeping rides in the same round trip
        results = pipe.execute(raise_on_error=False)
        also = None  # the bookkeeping ran with this round trip: a retry must not repeat it
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
    done = append_once(
        client,
        dataset,
        records,
        key_columns=key_columns,
        spec=spec,
        max_backlog=max_backlog,
        durable=durable,
    )
    return [i for i in done.ids if i is not None]


_STREAM_ID = re.compile(r"^\d+-\d+$")


def append_once(
    client: redis.Redis,
    dataset: str,
    records: Sequence[dict[str, Any]],
    *,
    event_ids: Sequence[str | None] | None = None,
    request_id: str | None = None,
    dedup_ttl: float = DEDUP_TTL,
    key_columns: Sequence[str] = (),
    spec: SourceSpec | None = None,
    max_backlog: int | None = None,
    durable: bool | None = None,
    also: Callable[[Any], None] | None = None,
) -> Appended:
    """:func:`append`, storing each event at most once; one atomic script.

    ``event_ids`` (one per record, or None) names each event: an id stored before (within
    ``dedup_ttl`` seconds), or earlier in the same call, is not stored again, and its record
    gets the stream id it was first stored under. With ``request_id`` (an Idempotency-Key)
    a repeat of the whole call stores nothing and gets the first call's ids back
    (``replayed``). The check, the XADDs and the recording of the ids happen in one Lua
    script, so no crash between steps can store an event twice or lose the record of it.
    ``also(pipeline)`` may add the caller's own commands to the same round trip.
    """
    if not records:
        return Appended([], 0)
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
    keys = [
        log_key(dataset),
        backlog_key(dataset),
        latest_key(dataset),
        counters_key(dataset),
        counters_at_key(dataset),
        seen_key(dataset, "req", request_id) if request_id else log_key(dataset),
    ]
    owners = [0] * len(records)  # the index (1-based, Lua) of each record's event-id key
    if event_ids is not None:
        slots: dict[str, int] = {}
        for i, eid in enumerate(event_ids):
            if eid is not None:
                key = seen_key(dataset, "ev", str(eid))
                if key not in slots:
                    keys.append(key)
                    slots[key] = len(keys)
                owners[i] = slots[key]
    dedup = event_ids is not None and any(owners)
    # latest values and counters: pre-merged when every record will be stored, else one
    # entry per record so the script applies only those of the records it stores
    latest: list[tuple[int, str, bytes]] = []
    if key_columns:
        if dedup:
            latest = [
                (i + 1, entity_key(r, key_columns), p)
                for i, (r, p) in enumerate(zip(records, payloads, strict=True))
            ]
        else:
            merged = {entity_key(r, key_columns): p for r, p in zip(records, payloads, strict=True)}
            latest = [(0, f, p) for f, p in merged.items()]  # once per key: the last wins
    counts: list[tuple[int, str, str]] = []
    if opts["counters"]:
        if dedup:
            for i, record in enumerate(records):
                deltas = counter_deltas(opts["counters"], [record])
                counts += [(i + 1, name, repr(d)) for name, d in deltas.items()]
        else:
            deltas = counter_deltas(opts["counters"], records)
            counts = [(0, name, repr(d)) for name, d in deltas.items()]
    args: list[Any] = [
        cap or 0, len(payloads), notify_channel(dataset), int(dedup_ttl * 1000),
        "1" if request_id else "0", len(latest), len(counts),
    ]  # fmt: skip
    for payload, owner in zip(payloads, owners, strict=True):
        args += (payload, owner)
    for entry in latest:
        args += entry
    for entry in counts:
        args += entry
    try:
        replayed, answer, stored = _run_append(client, keys, args, durable, also)
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
    text = answer.decode() if isinstance(answer, bytes) else answer
    ids = [i if _STREAM_ID.match(i) else None for i in text.split(",")] if text else []
    return Appended(ids, int(stored), replayed=bool(replayed))


def seen_key(dataset: str, kind: str, value: str) -> str:
    """Key remembering that event (``kind`` ev) or request (``kind`` req) ``value`` was
    stored, and under which stream id(s)."""
    return f"cxd:{{{dataset}}}:seen:{kind}:{value}"


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

"""Checking pushed records (webhook, MQTT) against a dataset's declared columns."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import redis

from cxd.catalog import SourceSpec
from cxd.errors import BadInput
from speed.stream import append


def _check_value(ctype: str, value: Any) -> str | None:
    if value is None:
        return None
    if ctype in ("integer", "bigint", "smallint"):
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
                return f"expected an integer, got {value!r}"
    elif ctype in ("double precision", "real", "numeric"):
        if isinstance(value, bool):
            return f"expected a number, got {value!r}"
        try:
            float(value)
        except (TypeError, ValueError):
            return f"expected a number, got {value!r}"
    elif ctype == "boolean":
        if not isinstance(value, bool) and str(value).lower() not in (
            "true",
            "false",
            "t",
            "f",
            "0",
            "1",
        ):
            return f"expected true or false, got {value!r}"
    elif ctype in ("timestamptz", "timestamp"):
        try:
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return f"expected an ISO 8601 timestamp, got {value!r}"
    elif ctype == "date":
        try:
            date.fromisoformat(str(value))
        except ValueError:
            return f"expected an ISO 8601 date, got {value!r}"
    elif ctype == "uuid":
        try:
            uuid.UUID(str(value))
        except ValueError:
            return f"expected a UUID, got {value!r}"
    elif ctype == "text":
        if isinstance(value, dict | list):
            return f"expected text, got {json.dumps(value)[:40]}"
    return None


def record_problems(spec: SourceSpec, record: Any) -> list[dict[str, str]]:
    """Every problem of one pushed record as {field, reason} (empty when it is fine)."""
    if not isinstance(record, dict):
        return [{"field": "", "reason": "a record must be a JSON object"}]
    problems = []
    types = {c.name: c.type for c in spec.columns}
    for name in record:
        if name not in types:
            problems.append({"field": name, "reason": "not a column of the dataset"})
    for name, ctype in types.items():
        value = record.get(name)
        if value is None and (name in spec.key or name == spec.time_column):
            problems.append(
                {"field": name, "reason": "required (part of the key or the time column)"}
            )
            continue
        reason = _check_value(ctype, value)
        if reason:
            problems.append({"field": name, "reason": reason})
    return problems


def batch_problems(
    spec: SourceSpec, records: list[Any], event_id: str | None = None
) -> list[dict[str, Any]]:
    """Every problem of a batch of pushed records as {index, field, reason}."""
    bad = []
    for i, record in enumerate(records):
        for problem in record_problems(spec, record):
            bad.append({"index": i, **problem})
        if event_id and isinstance(record, dict) and record.get(event_id) in (None, ""):
            if not any(b["index"] == i and b["field"] == event_id for b in bad):
                bad.append({"index": i, "field": event_id, "reason": "required (the event id)"})
    return bad


# --- storing once -----------------------------------------------------------------------
#
# A pushed event may arrive twice: a webhook sender retries after a timeout, an MQTT
# broker redelivers an unacknowledged QoS 1 message after a reconnect. Each event id is
# *claimed* (one atomic script over all ids of the request), the new events appended to
# the speed layer, and the claims then *confirmed* ("done", kept for ``ttl``). A repeat
# of a confirmed id is acknowledged but not stored again; a repeat that arrives while the
# first is still being stored gets Busy (retry), so an event is never acknowledged before
# it is in Redis. If the append fails the claims are released, so a retry stores it.

_CLAIM = """
local whole = ARGV[3] == '1'
if whole and redis.call('GET', KEYS[1]) == 'done' then return {-1} end
local out, busy = {}, false
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then out[i] = 0 elseif v == 'done' then out[i] = 1 else out[i] = 2; busy = true end
end
if busy then return out end
for i, k in ipairs(KEYS) do
  if out[i] == 0 then redis.call('SET', k, ARGV[2], 'PX', ARGV[1]) end
end
return out
"""
_SETTLE = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    if ARGV[2] == '0' then redis.call('DEL', k) else redis.call('SET', k, 'done', 'PX', ARGV[2]) end
  end
end
return 1
"""
CLAIM_TTL = 30.0
DEDUP_TTL = 86400.0


class Busy(BadInput):
    """The same event id is being stored by another request right now; retry shortly."""

    code = "in_progress"
    status = 409


@dataclass
class Stored:
    """What :func:`store_once` did: stream ids of the new events, and how many were repeats."""

    ids: list[str]
    duplicates: int


def seen_key(dataset: str, kind: str, value: str) -> str:
    """Key remembering that event (``kind`` ev) or request (``kind`` req) ``value`` was stored."""
    return f"cxd:{{{dataset}}}:seen:{kind}:{value}"


def store_once(
    client: redis.Redis,
    spec: SourceSpec,
    records: list[dict[str, Any]],
    *,
    event_id: str | None = None,
    request_id: str | None = None,
    ttl: float = DEDUP_TTL,
) -> Stored:
    """Append ``records`` to the speed layer, skipping events whose id was stored before.

    ``event_id`` names the record field holding each event's id; ``request_id`` (an
    Idempotency-Key) makes the whole batch one event. Returns once the new events are in
    Redis. Raises :class:`Busy` when an id is being stored concurrently.
    """
    if not event_id and not request_id:
        return Stored(_append(client, spec, records), 0)
    keys: list[str] = [seen_key(spec.name, "req", request_id)] if request_id else []
    owner: list[int | None] = [None] if request_id else []  # record index owning each key
    first: set[str] = set()
    for i, record in enumerate(records if event_id else ()):
        key = seen_key(spec.name, "ev", str(record[event_id]))
        if key in first:  # the same event twice in one request: the first one counts
            continue
        first.add(key)
        keys.append(key)
        owner.append(i)
    token = f"pending:{uuid.uuid4().hex}"
    state = _script(client, _CLAIM)(
        keys=keys, args=[int(CLAIM_TTL * 1000), token, "1" if request_id else "0"]
    )
    if state == [-1]:
        return Stored([], len(records))
    if 2 in state:
        raise Busy(
            "an event with the same id is being stored right now; retry in a moment",
            details={"retry_after": 1},
        )
    fresh = [owner[n] for n, s in enumerate(state) if s == 0 and owner[n] is not None]
    new = [records[i] for i in sorted(fresh)] if event_id else records
    claimed = [k for k, s in zip(keys, state, strict=True) if s == 0]
    try:
        ids = _append(client, spec, new)
    except BaseException:
        _script(client, _SETTLE)(keys=claimed, args=[token, 0])
        raise
    _script(client, _SETTLE)(keys=claimed, args=[token, int(ttl * 1000)])
    return Stored(ids, len(records) - len(new))


def _append(client: redis.Redis, spec: SourceSpec, records: list[dict[str, Any]]) -> list[str]:
    key_columns = spec.key if spec.kind == "instantaneous" else ()
    # the speed layer reads the dataset's speed: settings (backlog cap, durability,
    # counters) from the spec
    return append(client, spec.name, records, key_columns=key_columns, spec=spec)


def _script(client: redis.Redis, body: str):
    return client.register_script(body)  # EVALSHA, loading the script on first use


def dead_letter_key(dataset: str) -> str:
    """Stream of pushed events that could not be stored, each with the reason."""
    return f"cxd:{{{dataset}}}:dead"


def dead_letter(
    client: redis.Redis, dataset: str, payload: bytes | str, reason: str, **meta: Any
) -> str:
    """Keep an undeliverable event with the reason (bounded to the newest 100,000)."""
    fields = {"d": payload, "reason": reason, "at": time.time()}  # "d" as in the speed layer
    fields.update({k: str(v) for k, v in meta.items()})
    eid = client.xadd(dead_letter_key(dataset), fields, maxlen=100_000, approximate=True)
    return eid.decode() if isinstance(eid, bytes) else eid


def parse_size(value: Any) -> int:
    """Bytes in a size such as ``16MiB``, ``512KB`` or a bare number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.match(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", str(value), re.I)
    if not match:
        raise ValueError(f"{value!r} is not a size like 16MiB, 512KB or 1048576")
    units = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
    return int(match.group(1)) * units[(match.group(2) or "b").lower()]

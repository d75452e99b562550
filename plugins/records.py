"""Checking pushed records (webhook, MQTT) against a dataset's declared columns."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import redis

from cxd.catalog import SourceSpec
from speed.stream import DEDUP_TTL, append_once


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
    spec: SourceSpec,
    records: list[Any],
    event_id: str | None = None,
    check: Callable[[Any], list[dict[str, str]]] | None = None,
) -> list[dict[str, Any]]:
    """Every problem of a batch of pushed records as {index, field, reason}.

    ``check(record)`` lists one record's problems (default :func:`record_problems`).
    """
    bad = []
    for i, record in enumerate(records):
        for problem in check(record) if check else record_problems(spec, record):
            bad.append({"index": i, **problem})
        if event_id and isinstance(record, dict) and record.get(event_id) in (None, ""):
            if not any(b["index"] == i and b["field"] == event_id for b in bad):
                bad.append({"index": i, "field": event_id, "reason": "required (the event id)"})
    return bad


# --- storing once -----------------------------------------------------------------------
#
# A pushed event may arrive twice: a webhook sender retries after a timeout, an MQTT
# broker redelivers an unacknowledged QoS 1 message after a reconnect. The speed layer's
# append script checks the event ids (and a request's Idempotency-Key), stores the new
# events and records their ids in one atomic step (speed.stream.append_once), so a repeat
# is acknowledged with the stream ids of the first time and never stored twice, even when
# the process that stored it died before it could answer.


@dataclass
class Stored:
    """What :func:`store_once` did: the stream id of every record, how many were repeats,
    and whether the whole request was a repeat (its Idempotency-Key was seen)."""

    ids: list[str | None]
    duplicates: int
    replayed: bool = False


def store_once(
    client: redis.Redis,
    spec: SourceSpec,
    records: list[dict[str, Any]],
    *,
    event_id: str | None = None,
    request_id: str | None = None,
    ttl: float = DEDUP_TTL,
    also=None,
) -> Stored:
    """Append ``records`` to the speed layer, skipping events whose id was stored before.

    ``event_id`` names the record field holding each event's id; ``request_id`` (an
    Idempotency-Key) makes the whole batch one event. Returns once the new events are in
    Redis. ``also(pipeline)`` adds the caller's bookkeeping to the same round trip.
    """
    done = append_once(
        client,
        spec.name,
        records,
        event_ids=[r.get(event_id) for r in records] if event_id else None,
        request_id=request_id,
        dedup_ttl=ttl,
        # the speed layer reads the dataset's key (instantaneous) and speed: settings
        # (backlog cap, durability, counters) from the spec
        spec=spec,
        also=also,
    )
    # a replay stored none of this request's records, whatever the first one held
    return Stored(done.ids, len(records) if done.replayed else done.duplicates, done.replayed)


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

"""Health of resident plugins (webhook receiver, MQTT subscribers), kept in Redis.

cxd-ingest writes one hash per dataset, ``cxd:{ds}:health``: whether the plugin is
connected, since when, when the last message arrived, how many messages and errors it
has seen and the last error. Any process (the REST API) reads it with :func:`read_health`.
A heartbeat older than :data:`STALE_AFTER` seconds means cxd-ingest is not running.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import redis

STALE_AFTER = 30.0
_INTS = ("messages", "errors", "duplicates", "dead_letters")
_TIMES = ("since", "last_message_at", "last_error_at", "heartbeat_at")


def health_key(dataset: str) -> str:
    """Hash of the resident plugin's status for ``dataset``."""
    return f"cxd:{{{dataset}}}:health"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def process_name() -> str:
    """host:pid of this process, so an operator knows which cxd-ingest wrote the status."""
    return f"{socket.gethostname()}:{os.getpid()}"


def set_connected(client: redis.Redis, dataset: str, plugin: str, connected: bool) -> None:
    """Record that the plugin of ``dataset`` connected (or lost its connection) now."""
    now = time.time()
    client.hset(
        health_key(dataset),
        mapping={
            "plugin": plugin,
            "connected": "1" if connected else "0",
            "since": now,
            "heartbeat_at": now,
            "process": process_name(),
        },
    )


def heartbeat(client: redis.Redis, dataset: str, plugin: str, connected: bool) -> None:
    """Refresh the heartbeat (and the connected flag) without touching the counters."""
    client.hset(
        health_key(dataset),
        mapping={
            "plugin": plugin,
            "connected": "1" if connected else "0",
            "heartbeat_at": time.time(),
            "process": process_name(),
        },
    )


def count_messages(
    pipe: redis.client.Pipeline | redis.Redis, dataset: str, n: int = 1, duplicates: int = 0
) -> None:
    """Count ``n`` received messages (``duplicates`` of them already stored before)."""
    key = health_key(dataset)
    pipe.hincrby(key, "messages", n)
    if duplicates:
        pipe.hincrby(key, "duplicates", duplicates)
    pipe.hset(key, "last_message_at", time.time())


def count_error(
    client: redis.Redis, dataset: str, reason: str, *, dead_letter: bool = False
) -> None:
    """Count one error and keep its reason as the last error."""
    key = health_key(dataset)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, "errors", 1)
    if dead_letter:
        pipe.hincrby(key, "dead_letters", 1)
    pipe.hset(key, mapping={"last_error": reason[:500], "last_error_at": time.time()})
    pipe.execute()


def read_health(client: redis.Redis, dataset: str) -> dict[str, Any] | None:
    """The status of the resident plugin of ``dataset`` as the API shows it (None if none)."""
    raw = {k.decode(): v.decode() for k, v in client.hgetall(health_key(dataset)).items()}
    if not raw:
        return None
    beat = float(raw.get("heartbeat_at", 0) or 0)
    alive = time.time() - beat < STALE_AFTER
    out: dict[str, Any] = {
        "plugin": raw.get("plugin"),
        "connected": raw.get("connected") == "1" and alive,
        "alive": alive,
        "process": raw.get("process"),
        "last_error": raw.get("last_error"),
    }
    for name in _INTS:
        out[name] = int(raw.get(name, 0) or 0)
    for name in _TIMES:
        out[name] = _iso(float(raw[name])) if raw.get(name) else None
    return out


def clear_health(client: redis.Redis, dataset: str) -> None:
    """Forget the status of ``dataset`` (its source was deleted)."""
    client.delete(health_key(dataset))

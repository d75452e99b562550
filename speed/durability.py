"""How safe an acknowledged event is in Redis, and the ``durable`` mode that makes it safe.

At start-up cxd reads Redis's persistence settings (``CONFIG GET appendonly /
appendfsync / save``; ``INFO`` when CONFIG is disabled) and logs a warning naming the
loss window when an acknowledged event could be lost on a Redis crash.

Durable mode (``CXD_SPEED_DURABLE=1`` or ``speed: {durable: true}`` on a source) makes
:func:`speed.stream.append` return only once the events are fsynced to the append-only
file: with ``WAITAOF 1 0`` where Redis supports it (7.2 and later), otherwise only if
Redis runs with ``appendonly yes`` and ``appendfsync always`` (Redis then fsyncs before
it answers). Anything else is refused with a message saying what to change.
See docs/speed-layer.md for the loss window of each mode.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import redis

from cxd.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

WAITAOF_TIMEOUT_MS = 5000
_CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Persistence:
    """What Redis says about its persistence, and what that means for acknowledged events."""

    version: tuple[int, ...]
    appendonly: bool | None  # None: could not be read
    appendfsync: str | None
    save: str | None
    config_readable: bool

    @property
    def waitaof(self) -> bool:
        """True when Redis has WAITAOF (7.2 and later)."""
        return self.version >= (7, 2)

    @property
    def loss_window(self) -> str:
        """What a Redis crash can lose of the acknowledged, not yet loaded events."""
        if self.appendonly is None:
            return "unknown (CONFIG is disabled and INFO does not say)"
        if self.appendonly:
            return {
                "always": "nothing (every write is fsynced before Redis answers)",
                "everysec": "about the last 1-2 seconds of events",
                "no": "up to about 30 seconds of events (the OS decides when to flush)",
            }.get(self.appendfsync or "", f"unknown (appendfsync {self.appendfsync!r})")
        if self.save:
            return f"every event since the last RDB snapshot (save {self.save!r})"
        return "every event not yet loaded into Postgres (no persistence at all)"

    @property
    def safe(self) -> bool:
        """True when no acknowledged event can be lost on a Redis crash."""
        return bool(self.appendonly) and self.appendfsync == "always"

    def durable_problem(self) -> str | None:
        """Why durable mode cannot be honoured on this Redis, or None when it can."""
        if self.waitaof:
            if self.appendonly is False:
                return "durable mode needs the append-only file: run Redis with `appendonly yes`"
            return None
        if self.safe:
            return None
        version = ".".join(map(str, self.version))
        if not self.config_readable:
            return (
                f"durable mode: Redis {version} has no WAITAOF and CONFIG is disabled, so cxd "
                "cannot verify `appendfsync always`; use Redis 7.2 or newer, or enable CONFIG"
            )
        return (
            f"durable mode needs Redis 7.2 or newer (WAITAOF) or `appendonly yes` with "
            f"`appendfsync always`; Redis {version} has appendonly "
            f"{'yes' if self.appendonly else 'no'}, appendfsync {self.appendfsync}"
        )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def inspect(client: redis.Redis) -> Persistence:
    """Read Redis's version and persistence settings."""
    info = client.info("server")
    version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:3])
    try:
        conf = {}
        for name in ("appendonly", "appendfsync", "save"):
            reply = client.config_get(name)
            conf.update({_text(k): _text(v) for k, v in reply.items()})
        return Persistence(
            version=version,
            appendonly=conf.get("appendonly") == "yes",
            appendfsync=conf.get("appendfsync"),
            save=conf.get("save") or None,
            config_readable=True,
        )
    except redis.ResponseError:
        persistence = client.info("persistence")  # CONFIG renamed or disabled
        aof = persistence.get("aof_enabled")
        return Persistence(
            version=version,
            appendonly=None if aof is None else bool(int(aof)),
            appendfsync=None,
            save=None,
            config_readable=False,
        )


def durable_default() -> bool:
    """True when ``CXD_SPEED_DURABLE`` asks for durable mode for every dataset."""
    return os.environ.get("CXD_SPEED_DURABLE", "").strip().lower() in ("1", "true", "yes", "on")


def startup_check(client: redis.Redis, *, durable: bool | None = None) -> Persistence:
    """Log the loss window; raise ConfigError when durable mode is asked for but impossible."""
    p = inspect(client)
    durable = durable_default() if durable is None else durable
    if durable:
        problem = p.durable_problem()
        if problem:
            raise ConfigError(problem)
        log.info("speed layer: durable mode (%s)", "WAITAOF" if p.waitaof else "appendfsync always")
    elif not p.safe:
        log.warning(
            "speed layer: a Redis crash can lose acknowledged events not yet loaded into "
            "Postgres: %s. Set CXD_SPEED_DURABLE=1 (with appendonly yes) to wait for the "
            "append-only file; see docs/speed-layer.md",
            p.loss_window,
        )
    return p


_checked: dict[int, tuple[float, Persistence]] = {}


def durable_persistence(client: redis.Redis) -> Persistence:
    """The persistence of ``client``'s Redis if durable mode can be honoured (cached briefly).

    Raises ConfigError naming what to change otherwise.
    """
    key = id(client.connection_pool)
    hit = _checked.get(key)
    if hit and time.monotonic() - hit[0] < _CACHE_SECONDS:
        return hit[1]
    p = inspect(client)
    problem = p.durable_problem()
    if problem:
        _checked.pop(key, None)
        raise ConfigError(problem)
    _checked[key] = (time.monotonic(), p)
    return p


def check_waitaof(reply) -> None:
    """Raise TransientError unless WAITAOF confirmed the local fsync."""
    local = int(reply[0]) if reply else 0
    if local < 1:
        raise TransientError(
            "Redis did not confirm the append-only file fsync in time; the events may not be "
            "durable, retry the request"
        )

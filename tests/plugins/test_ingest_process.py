"""The real ``cxd-ingest`` process: webhook receiver and MQTT subscribers, including a
source declared over REST while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from query_router import run_query
from tests.plugins.brokers import broker, eventually, free_port, publish, wait_for_port  # noqa: F401
from tests.plugins.sources import process_env, stop_process

pytestmark = pytest.mark.mqtt

COLUMNS = [
    {"name": "event_id", "type": "text"},
    {"name": "sensor", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "level", "type": "double precision"},
]


def source(name, type_, **options):
    return {
        "name": name,
        "type": type_,
        "kind": "time_series",
        "options": options,
        "columns": COLUMNS,
        "time_column": "at",
    }


@pytest.fixture
def ingest_process(stores, settings, tmp_path, broker):  # noqa: F811
    port = free_port()
    mqtt = {"port": broker.port, "topics": ["plant/#"], "reconnect_delay": {"min": 1, "max": 1}}
    sources = [
        source("hooked", "webhook", event_id="event_id", max_body="64KiB"),
        source("plant", "mqtt", event_id="event_id", **mqtt),
    ]
    settings.config_file.write_text(yaml.safe_dump({"sources": sources}))
    env = process_env(settings, CXD_INGEST_PORT=str(port), CXD_LOG_LEVEL="INFO")
    log = open(tmp_path / "ingest.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cxd-ingest")], env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop_process(proc)
        log.close()


def count(stores, dataset) -> int:
    return run_query(stores, f"SELECT count(*) AS n FROM {dataset}")["rows"][0]["n"]


def event(n, sensor="a"):
    return {"event_id": f"e{n}", "sensor": sensor, "at": f"2026-05-05T10:00:{n:02d}Z", "level": n}


def test_cxd_ingest_receives_webhooks_and_mqtt(
    stores,
    client,
    auth,
    ingest_process,
    broker,  # noqa: F811
):
    url, proc = ingest_process

    def health(name):
        return client.get(f"/api/sources/{name}", headers=auth("read")).get_json()["health"]

    headers = auth("ingest")
    r = requests.post(f"{url}/hooks/hooked", json=[event(1), event(2)], headers=headers, timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2
    nd = "\n".join(json.dumps(event(n)) for n in (2, 3))
    r = requests.post(
        f"{url}/hooks/hooked",
        data=nd,
        headers={**headers, "Content-Type": "application/x-ndjson"},
        timeout=10,
    )
    assert r.status_code == 202 and r.json()["duplicates"] == 1
    r = requests.post(f"{url}/hooks/hooked", json=[{"level": "x"}], headers=headers, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["details"]["records"][0]["index"] == 0

    def chunks():  # chunked transfer: no Content-Length, the limit is enforced while reading
        yield b"["
        for n in range(2000):
            yield json.dumps(event(n % 60)).encode() + b","
        yield b"{}]"

    r = requests.post(
        f"{url}/hooks/hooked",
        data=chunks(),
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 413
    assert eventually(lambda: count(stores, "hooked") == 3, what="3 webhook events")

    # the MQTT source declared in cxd.yml is subscribed
    eventually(lambda: (health("plant") or {}).get("connected"), timeout=30, what="plant up")
    publish(broker.port, [("plant/a", json.dumps(event(1))), ("plant/b", json.dumps(event(2)))])
    eventually(lambda: count(stores, "plant") == 2, what="2 mqtt events")

    # a source declared over REST while cxd-ingest runs is picked up by its keeper
    declared = source("later", "mqtt", port=broker.port, topics=["later/+"])
    assert client.post("/api/sources", json=declared, headers=auth()).status_code == 201
    eventually(lambda: (health("later") or {}).get("connected"), timeout=30, what="later up")
    publish(broker.port, [("later/x", json.dumps(event(7, "x")))])
    eventually(lambda: count(stores, "later") == 1, what="the later source's event")
    assert health("plant")["messages"] == 2 and health("plant")["alive"] is True
    assert health("hooked")["messages"] == 4 and health("hooked")["errors"] == 2
    assert proc.poll() is None

    # the keeper (loader, schedules, resident plugins) runs in a process of its own, and
    # comes back if it dies
    keeper = keeper_pid(proc.pid)
    os.kill(keeper, signal.SIGKILL)
    eventually(lambda: keeper_pid(proc.pid) not in (None, keeper), timeout=30, what="a new keeper")
    r = requests.post(f"{url}/hooks/hooked", json=[event(9)], headers=headers, timeout=10)
    assert r.status_code == 202
    assert eventually(lambda: count(stores, "hooked") == 4, what="the event loaded after")

    # and it does not outlive cxd-ingest killed -9
    keeper = keeper_pid(proc.pid)
    proc.kill()
    proc.wait()
    eventually(lambda: not running(keeper), timeout=20, what="the orphaned keeper gone")


def running(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State"))
    return state.split()[1] not in ("Z", "X")


def keeper_pid(parent: int) -> int | None:
    """The pid of cxd-ingest's keeper process (a child running `cxd.ingest keeper`)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(line for line in status.read_text().splitlines() if line.startswith("PPid"))
            cmdline = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration):
            continue
        if int(ppid.split()[1]) == parent and b"keeper" in cmdline:
            return int(status.parent.name)
    return None

"""``cxd up`` with embedded stores: serves, stops everything on Ctrl-C, keeps data for next time."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_of(home: Path) -> list[str]:
    """Every live process started for this CXD_HOME (by environment or command line)."""
    found = []
    marker = str(home).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker in cmdline or b"CXD_HOME=" + marker in environ):
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
            found.append(f"{pid}: {shown}")
    return found


@pytest.fixture
def up_env():
    home = Path(tempfile.mkdtemp(prefix="cxdu-", dir="/tmp"))
    data = home / "data"
    data.mkdir()
    (data / "a.csv").write_text("origin,time_hour,temp\nEWR,2026-05-05T10:00:00Z,12.5\n")
    config = home / "cxd.yml"
    config.write_text(
        "sources:\n"
        "  - name: weather\n"
        "    type: file\n"
        f"    options: {{path: '{data}/*.csv'}}\n"
        "    columns: [{name: origin, type: text}, {name: time_hour, type: timestamptz},"
        " {name: temp, type: double precision}]\n"
        "    key: [origin, time_hour]\n"
        "    time_column: time_hour\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXD_")}
    env.update(
        CXD_HOME=str(home / "h"), CXD_CONFIG=str(config), CXD_PORT=str(free_port()),
        CXD_INGEST_PORT=str(free_port()), PYTHONPATH=str(ROOT),
    )  # fmt: skip
    yield env
    subprocess.run(
        [sys.executable, "-m", "cxd.cli", "down"], env=env, capture_output=True, timeout=120
    )
    shutil.rmtree(home, ignore_errors=True)


def start_up(env) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxd.cli", "up"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{env['CXD_PORT']}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if requests.get(f"{base}/api/health", timeout=10).status_code == 401:
                return proc, base
        except requests.RequestException:
            time.sleep(0.3)
    ctrl_c(proc)
    raise AssertionError("cxd up did not serve within 120 s")


def ctrl_c(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(
            f"cxd up did not stop within 90 s of Ctrl-C:\n{out.decode(errors='replace')}"
        ) from None
    return out.decode(errors="replace")


def cli(env, *args) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cxd.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_up_serves_stops_cleanly_and_keeps_data(up_env):
    home = Path(up_env["CXD_HOME"])
    proc, base = start_up(up_env)
    running = processes_of(home)
    assert len(running) >= 5, running  # up, web, ingest, worker, scheduler (+ the stores)
    token = cli(up_env, "token", "create", "--role", "admin").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    run_id = requests.post(
        f"{base}/api/sources/weather/runs", json={}, headers=headers, timeout=10
    ).json()["run_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = requests.get(f"{base}/api/runs/{run_id}", headers=headers, timeout=10).json()
        if run["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    assert run["status"] == "succeeded", run  # the worker process ran the job
    output = ctrl_c(proc)
    assert proc.returncode == 0, output
    time.sleep(0.5)
    assert processes_of(home) == [], output

    proc, base = start_up(up_env)  # the second up finds the data of the first
    try:
        runs = requests.get(f"{base}/api/runs?dataset=weather", headers=headers, timeout=10).json()
        assert [r["id"] for r in runs] == [run_id]
        result = requests.post(
            f"{base}/api/sql",
            json={"sql": "SELECT origin, temp FROM weather"},
            headers=headers,
            timeout=10,
        ).json()
        assert result["rows"] == [{"origin": "EWR", "temp": 12.5}]
    finally:
        ctrl_c(proc)
    time.sleep(0.5)
    assert processes_of(home) == []


def test_down_stops_a_running_up_and_its_stores(up_env):
    home = Path(up_env["CXD_HOME"])
    proc, _ = start_up(up_env)
    try:
        out = cli(up_env, "down")
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    assert "stopped cxd up" in out
    time.sleep(0.5)
    assert processes_of(home) == []

"""The README's first command: ``./scripts/demo.sh`` sets up and serves the factory demo."""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.cxd.test_up import ctrl_c, free_port, processes_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo():
    """``scripts/demo.sh`` running with its own home and ports; yields (process, env, lines)."""
    home = Path(tempfile.mkdtemp(prefix="cxdd-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXD_")}
    env.update(
        CXD_HOME=str(home / ".cxd"), CXD_PORT=str(free_port()), CXD_INGEST_PORT=str(free_port())
    )
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "demo.sh")], env=env, cwd=home, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    yield proc, env, lines
    if proc.poll() is None:
        ctrl_c(proc)
    subprocess.run([str(ROOT / ".venv/bin/cxd"), "down"], env=env, capture_output=True, timeout=120)
    assert processes_of(home) == []
    shutil.rmtree(home, ignore_errors=True)


def wait_for_line(proc, lines: list[str], pattern: str, timeout: float) -> re.Match:
    """Read the demo's output until a line matches ``pattern``."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the demo exited:\n" + "".join(lines[-40:])
        if sel.select(timeout=0.5):
            chunk = os.read(proc.stdout.fileno(), 65536)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                lines.append(text + "\n")
                if m := re.search(pattern, text):
                    return m
    raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n" + "".join(lines[-40:]))


def test_demo_serves_the_printed_curl_command(demo):
    proc, env, lines = demo
    m = wait_for_line(proc, lines, r"^\s*(curl -H .*/results)\s*$", timeout=240)
    command = m.group(1)
    assert f":{env['CXD_PORT']}/api/queries/" in command
    deadline = time.monotonic() + 60
    while True:  # the web process may still be starting when the line is printed
        result = subprocess.run(
            ["bash", "-c", command + " --fail --silent --show-error"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["rows"], answer
    assert {"batch_watermark", "speed_high_water", "plan"} <= set(answer["freshness"])


def test_reset_demo_script_refills_every_source(store_urls, stores, tmp_path):
    db_url, redis_url = store_urls
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXD_")}
    env.update(CXD_HOME=str(tmp_path / "home"), CXD_DATABASE_URL=db_url, CXD_REDIS_URL=redis_url)
    script = ROOT / "scripts" / "reset-demo.sh"
    for _ in range(2):  # a second reset starts again from a clean slate
        result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        made = int(re.search(r"(\d+) products made", result.stdout).group(1))
        assert "loaded production: run" in result.stdout and "succeeded" in result.stdout
        production = stores.db.fetchone("SELECT count(*) AS n FROM raw.production")["n"]
        shifts = stores.db.fetchone("SELECT count(*) AS n FROM raw.shifts")["n"]
        assert production == made and shifts == 1
        from speed.stream import backlog

        assert backlog(stores.redis, "sensor") == made  # every product's sensor event is live

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

from cxd.demo import QUERIES
from tests.conftest import OUTPUT
from tests.cxd.test_up import ctrl_c, free_port, processes_of

QUERY_NAMES = [q["name"] for q in QUERIES]

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
    """Read the demo's output into ``lines`` until one of them matches ``pattern``."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while True:
        for line in lines:
            if m := re.search(pattern, line):
                return m
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no line matching {pattern!r} in {timeout} s:\n" + "".join(lines[-40:])
            )
        assert proc.poll() is None, "the demo exited:\n" + "".join(lines[-40:])
        if sel.select(timeout=0.5):
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            pending = (lines.pop() if lines and not lines[-1].endswith("\n") else "") + chunk
            lines.extend(pending.splitlines(keepends=True))


def test_demo_serves_the_printed_curl_command_and_a_live_dashboard(demo, browser):
    proc, env, lines = demo
    dashboard = wait_for_line(proc, lines, r"live dashboard at (http\S+)", timeout=240).group(1)
    m = wait_for_line(proc, lines, r"^\s*(curl -H .*/results)\s*$", timeout=30)
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

    # the dashboard page: all five outputs change live in the browser within a minute
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(dashboard)
        panels = page.locator("section[data-query]")
        assert panels.count() == 5
        page.wait_for_function(
            "[...document.querySelectorAll('section[data-query]')]"
            ".every((s) => Number(s.dataset.updates || 0) >= 1)",
            timeout=30_000,
        )
        first = {q: page.locator(f"#out-{q} .body").inner_text() for q in QUERY_NAMES}
        counts = {q: int(page.locator(f"#out-{q}").get_attribute("data-updates")) for q in first}
        assert all(first.values()), first
        page.wait_for_function(
            "(counts) => Object.entries(counts).every(([q, n]) =>"
            " Number(document.getElementById('out-' + q).dataset.updates) > n)",
            arg=counts,
            timeout=60_000,
        )
        # (each update above is a pushed result whose rows differ from the one shown before)
        later = {q: page.locator(f"#out-{q} .body").inner_text() for q in QUERY_NAMES}
        assert all(later.values()), later
        assert page.locator("#status").inner_text() == "live"
    finally:
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "demo-dashboard.png"), full_page=True)
        context.close()


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

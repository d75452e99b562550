"""Schedules end to end with real processes: cxd-ingest (its keeper registers the
schedule), two ``cxd scheduler`` at once and two ``cxd worker``, on the test's Postgres
and Redis. One scheduler is restarted and the other killed with SIGKILL and restarted,
and the schedule entry is deleted from Redis mid-way; every slot of the window still
runs exactly once and the source's rows load exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from batch.schedule import scheduler
from tests.batch.growing import growing_plugin
from tests.helpers import child_pids, eventually

ROOT = Path(__file__).resolve().parents[2]
EVERY = 2  # seconds per slot
POLL = 0.5  # each scheduler's polling interval (seconds)
ENTRY = "cxd-schedule-ticks-every"

GROWING = growing_plugin(["id", "at"], as_text=True)


class Processes:
    """The processes this test started; every one of them (and its children) is ended."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *argv: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CXD_LOG_LEVEL": "INFO"}
        with open(self.logs / f"{name}.log", "ab") as out:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", *argv], env=env, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip

    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 10) -> None:
        proc = self.running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        family = [*child_pids(proc.pid), proc.pid]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        for pid in [*family, *child_pids(proc.pid)]:  # nothing of it outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name, wait=5)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.running.items() if p.poll() is not None}
        assert not dead, f"processes exited: {dead}; logs in {self.logs}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def _slot_start(at: float) -> int:
    return int(at // EVERY * EVERY)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_two_schedulers_restarts_and_a_vanished_entry_run_every_slot_once(
    stores, settings, tmp_path, processes, monkeypatch
):
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.plugin_dir.mkdir(parents=True, exist_ok=True)
    (settings.plugin_dir / "growing.py").write_text(GROWING)
    source = tmp_path / "ticks.csv"
    source.write_text("")
    declared = {
        "name": "ticks",
        "type": "python",
        "plugin": "growing",
        "kind": "time_series",
        "options": {"path": str(source), "unreachable": str(tmp_path / "unreachable")},
        "columns": [{"name": "id", "type": "bigint"}, {"name": "at", "type": "timestamptz"}],
        "time_column": "at",
        "schedule": {"every": f"{EVERY}s"},
    }  # no key: a load applied twice would duplicate rows
    settings.config_file.write_text(yaml.safe_dump({"sources": [declared]}))
    monkeypatch.setenv("CXD_INGEST_PORT", str(_free_port()))
    monkeypatch.setenv("CXD_RETRY_BACKOFF", "1,1,1")

    written = 0
    stop_writing = threading.Event()

    def write() -> None:  # the source keeps growing, a few rows at a time
        nonlocal written
        while not stop_writing.is_set():
            with source.open("a") as fh:
                for _ in range(3):
                    fh.write(f"{written},{datetime.now(UTC).isoformat()}\n")
                    written += 1
            time.sleep(0.1)

    writer = threading.Thread(target=write, daemon=True)
    sch = scheduler(stores)
    processes.start("ingest", "cxd.ingest")
    for name in ("worker-1", "worker-2"):
        processes.start(name, "cxd.cli", "worker")
    for name in ("scheduler-a", "scheduler-b"):
        processes.start(name, "cxd.cli", "scheduler", "--interval", str(POLL))
    try:
        eventually(lambda: ENTRY in sch, 40, "cxd-ingest to register the schedule")
        registered_at = time.time()
        writer.start()

        def slot_runs() -> list[dict]:
            return stores.db.fetchall(
                "SELECT id, slot, status, rows_loaded, error, attempts FROM cxd.runs"
                " WHERE dataset = 'ticks' AND slot IS NOT NULL ORDER BY slot"
            )

        eventually(
            lambda: any(r["status"] == "succeeded" for r in slot_runs()), 40, "a first slot run"
        )
        processes.check_alive()
        time.sleep(2 * EVERY)

        processes.stop("scheduler-a")  # a restart: SIGTERM, then a new process
        processes.start("scheduler-a", "cxd.cli", "scheduler", "--interval", str(POLL))
        time.sleep(2 * EVERY)

        # the entry vanishes from Redis (flushed, evicted, deleted by hand)
        stores.redis.zrem(sch.scheduled_jobs_key, ENTRY)
        stores.redis.delete(f"rq:job:{ENTRY}")
        assert ENTRY not in sch
        eventually(lambda: ENTRY in sch, 5, "cxd-ingest's keeper to register the entry again")
        time.sleep(EVERY)

        (tmp_path / "unreachable").touch()  # the next run's fetch fails once; rq retries it
        processes.stop("scheduler-b", signal.SIGKILL)  # killed, then started again
        processes.start("scheduler-b", "cxd.cli", "scheduler", "--interval", str(POLL))
        time.sleep(3 * EVERY)
        processes.check_alive()

        # the slot that just started is fired, and every one before it (a scheduler killed
        # while it held rq-scheduler's lock stalls both for ~10 s; the missed slots are
        # then caught up)
        stopped_at = time.time()
        wanted = _slot_start(stopped_at - 2 * POLL)
        eventually(
            lambda: any(r["slot"] and _epoch(r["slot"]) >= wanted for r in slot_runs()),
            20,
            lambda: f"the slot of {wanted} to run: {slot_runs()}",
        )
        processes.stop("scheduler-a")
        processes.stop("scheduler-b")
        stop_writing.set()
        writer.join()

        def settled() -> bool:
            return not stores.db.fetchone(
                "SELECT count(*) AS n FROM cxd.runs WHERE status NOT IN ('succeeded', 'failed')"
            )["n"] and not stores.redis.llen("rq:queue:cxd-batch")

        eventually(settled, 30, lambda: f"every run to finish: {slot_runs()}")
    finally:
        stop_writing.set()
        processes.stop_all()

    runs = slot_runs()
    seen = f"runs {runs}; logs in {tmp_path}"
    assert [r for r in runs if r["status"] != "succeeded"] == [], seen
    slots = [_epoch(r["slot"]) for r in runs]
    assert len(slots) == len(set(slots)), f"a slot ran twice: {seen}"
    first, last = slots[0], slots[-1]
    assert first <= _slot_start(registered_at), f"the first slot did not run: {seen}"
    assert last >= wanted, seen
    missing = sorted(set(range(first, last + 1, EVERY)) - set(slots))
    assert missing == [], f"slots never ran: {missing}; {seen}"
    assert all(s % EVERY == 0 for s in slots), seen
    retried = [r["id"] for r in runs if r["attempts"] > 1]
    assert len(retried) == 1 and not (tmp_path / "unreachable").exists(), seen

    from batch.jobs import execute_run
    from batch.runs import create_run

    execute_run(stores, create_run(stores.db, "ticks"))  # what the last slot did not see
    stats = stores.db.fetchone(
        "SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi FROM raw.ticks"
    )
    assert stats == {"n": written, "d": written, "lo": 0, "hi": written - 1}, stats
    print(f"{len(slots)} slots, {written} rows, window {last - first + EVERY}s")

"""A real rq worker killed with SIGKILL at random points during many loads: afterwards raw
holds every source row exactly once and the watermark never moved backwards.

``CXD_CHAOS_LOADS`` (default 50), ``CXD_CHAOS_ROWS`` rows per load (3000) and
``CXD_CHAOS_KILL_RATE`` (0.3, the share of loads whose worker is killed mid-run) size it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from batch.jobs import enqueue_run, recover
from tests.batch.growing import growing_plugin
from tests.helpers import child_pids

ROOT = Path(__file__).resolve().parents[2]
LOADS = int(os.environ.get("CXD_CHAOS_LOADS", "50"))
ROWS_PER_LOAD = int(os.environ.get("CXD_CHAOS_ROWS", "3000"))
KILL_RATE = float(os.environ.get("CXD_CHAOS_KILL_RATE", "0.3"))
KILL_WITHIN = 0.1  # seconds after the run started fetching

GROWING = growing_plugin(["id", "at", "v"], as_text=True)


def _stuck(stores) -> list[dict]:
    from rq.job import Job

    out = stores.db.fetchall(
        "SELECT id, status, job_id, attempts, log FROM cxd.runs"
        " WHERE status NOT IN ('succeeded', 'failed')"
    )
    for run in out:
        run["locked"] = stores.db.fetchall(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
            (run["id"],),
        )
        try:
            run["job"] = Job.fetch(run["job_id"], connection=stores.redis).get_status()
        except Exception as exc:
            run["job"] = repr(exc)
    return out


def _wait_for(stores, run_id: int, statuses: tuple[str, ...], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stores.db.fetchone("SELECT status FROM cxd.runs WHERE id = %s", (run_id,))[
            "status"
        ]
        if status in statuses:
            return status
        time.sleep(0.005)
    raise AssertionError(f"run {run_id} never reached {statuses}")


class Worker:
    """A ``cxd worker`` process in its own session, so SIGKILL takes its work horse too."""

    def __init__(self, log: Path):
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def ensure(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "CXD_LOG_LEVEL": "WARNING"}
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "cxd.cli", "worker"],
                    env=env, stdout=out, stderr=out, start_new_session=True,
                )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the worker and its work horse (rq puts the horse in its own session)."""
        if self.proc and self.proc.poll() is None:
            for pid in [*child_pids(self.proc.pid), self.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1


@pytest.mark.slow
def test_sigkill_during_loads_loses_and_duplicates_nothing(
    declare, plugin_file, tmp_path, stores, settings
):
    plugin_file("growing", GROWING)
    source = tmp_path / "source.csv"
    source.write_text("")
    declare(
        name="events",
        type="python",
        plugin="growing",
        kind="time_series",
        options={"path": str(source)},
        columns=[
            {"name": "id", "type": "bigint"},
            {"name": "at", "type": "timestamptz"},
            {"name": "v", "type": "double precision"},
        ],
        time_column="at",
    )  # fmt: skip  -- no key: a load applied twice would duplicate rows

    seen: list[tuple[int, int]] = []
    backwards: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        conn = psycopg2.connect(settings.database_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute(
                    "SELECT coalesce((cursor #>> '{}')::bigint, 0),"
                    " (SELECT coalesce(max(_seq), 0) FROM raw.events) FROM cxd.watermarks"
                    " WHERE dataset = 'events'"
                )
                now = cur.fetchone()
                if seen and (now[0] < seen[-1][0] or now[1] < seen[-1][1]):
                    backwards.append(f"{seen[-1]} -> {now}")
                seen.append(now)
                time.sleep(0.01)
        conn.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rng = random.Random(int(os.environ.get("CXD_CHAOS_SEED", "7")))
    worker = Worker(tmp_path / "worker.log")
    next_id = 0
    kills_in_run: list[str] = []
    try:
        for _ in range(LOADS):
            with source.open("a") as fh:
                for _ in range(ROWS_PER_LOAD):
                    fh.write(
                        f"{next_id},2026-05-{1 + next_id % 28:02d}T00:00:00Z,{next_id * 0.5}\n"
                    )
                    next_id += 1
            worker.ensure()
            run_id = enqueue_run(stores, "events")
            if rng.random() < KILL_RATE:
                # wait until the worker is inside the run, then kill it somewhere in it
                _wait_for(stores, run_id, ("fetching", "ingesting", "succeeded", "failed"))
                time.sleep(rng.uniform(0, KILL_WITHIN))
                worker.kill()
                kills_in_run.append(stores.db.fetchone(
                    "SELECT status FROM cxd.runs WHERE id = %s", (run_id,))["status"])  # fmt: skip
        deadline = time.monotonic() + int(os.environ.get("CXD_CHAOS_WAIT", "240"))
        while time.monotonic() < deadline:
            worker.ensure()
            left = stores.db.fetchone(
                "SELECT count(*) AS n FROM cxd.runs WHERE status NOT IN ('succeeded', 'failed')"
            )["n"]
            if not left:
                break
            time.sleep(1)
            recover(stores)  # what cxd-ingest's keeper does every ~30s
        assert not left, f"{left} run(s) never finished: {_stuck(stores)}; see {worker.log}"
    finally:
        worker.kill()
        stop.set()
        watcher.join()

    failed = stores.db.fetchall("SELECT id, error FROM cxd.runs WHERE status = 'failed'")
    assert failed == []
    from batch.jobs import execute_run
    from batch.runs import create_run

    execute_run(stores, create_run(stores.db, "events"))  # whatever the last run did not see
    stats = stores.db.fetchone(
        "SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi FROM raw.events"
    )
    assert stats == {"n": next_id, "d": next_id, "lo": 0, "hi": next_id - 1}, stats
    assert backwards == []
    assert len(seen) > 10
    assert {"fetching", "ingesting"} & set(kills_in_run), kills_in_run  # some kills were mid-run
    recovered = stores.db.fetchone(
        "SELECT count(*) AS n FROM cxd.runs WHERE log @> %s::jsonb",
        ('[{"message": "recovered after its worker died"}]',),
    )["n"]
    assert recovered > 0
    print(
        f"{LOADS} loads, {worker.kills} kills {kills_in_run}, {recovered} runs recovered, {next_id} rows"
    )

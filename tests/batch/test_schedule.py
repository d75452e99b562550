"""Schedule slots with the real rq-scheduler on the test's Redis: an entry fires slot by
slot (no drift), catches up what it missed, is re-registered where it left off, and
runs of one dataset never overlap."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from batch.jobs import enqueue_run, execute_run
from batch.runs import create_run
from batch.schedule import (
    CATCH_UP,
    pause_schedule,
    register_schedules,
    resume_schedule,
    scheduler,
    slot_job_id,
    slot_start,
)

EVERY = 60
ENTRY = "cxd-schedule-temps-every"


@pytest.fixture(autouse=True)
def clear_of_a_minute_boundary():
    """These tests compute the current slot and then fire it: not across a minute's end."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


@pytest.fixture
def temps(declare, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.csv").write_text("site,at,v\nx,2026-05-05T00:00:00Z,1\n")
    return declare(
        name="temps",
        type="file",
        options={"path": f"{folder}/*.csv", "settle": "0s"},
        columns=[{"name": "site", "type": "text"}, {"name": "at", "type": "timestamptz"},
                 {"name": "v", "type": "double precision"}],
        key=["site", "at"],
        time_column="at",
        schedule={"every": f"{EVERY}s"},
    )  # fmt: skip


def _slots(stores) -> list[str]:
    return [r["slot"] for r in stores.db.fetchall("SELECT slot FROM cxd.runs ORDER BY slot")]


def _due(stores) -> datetime:
    return datetime.fromtimestamp(
        stores.redis.zscore(scheduler(stores).scheduled_jobs_key, ENTRY), UTC
    )


def _owe(stores, slot: datetime) -> None:
    stores.redis.zadd(scheduler(stores).scheduled_jobs_key, {ENTRY: slot.timestamp()}, xx=True)


def test_an_entry_fires_its_slot_and_moves_to_the_next_slot_start(temps, stores, run_jobs):
    assert register_schedules(stores, [temps]) == 1
    now = datetime.now(UTC)
    current = slot_start(EVERY, now)
    assert _due(stores) == current  # a new schedule runs its current slot at once
    scheduler(stores).enqueue_jobs()
    queued = stores.redis.lrange("rq:queue:cxd-batch", 0, -1)
    assert [j.decode() for j in queued] == [slot_job_id("temps", "incremental", current)]
    # the next fire is the next slot's start, not "now + interval" (which drifts)
    assert _due(stores) == current + timedelta(seconds=EVERY)
    # a second scheduler firing the same slot again (the first died before moving the
    # entry on) enqueues the same job id; the slot still runs once
    _owe(stores, current)
    scheduler(stores).enqueue_jobs()
    run_jobs()
    assert _slots(stores) == [current.isoformat()]
    assert stores.db.fetchone("SELECT status FROM cxd.runs")["status"] == "succeeded"


def test_missed_slots_are_caught_up_and_a_long_gap_is_coalesced(temps, stores, run_jobs):
    register_schedules(stores, [temps])
    current = slot_start(EVERY, datetime.now(UTC))
    _owe(stores, current - timedelta(seconds=3 * EVERY))  # every scheduler was down 3 minutes
    scheduler(stores).enqueue_jobs()
    run_jobs()
    assert _slots(stores) == [
        (current - timedelta(seconds=n * EVERY)).isoformat() for n in (3, 2, 1, 0)
    ]
    assert _due(stores) == current + timedelta(seconds=EVERY)

    stores.db.execute("DELETE FROM cxd.runs")
    _owe(stores, current - timedelta(seconds=CATCH_UP + 2 * EVERY))  # down longer than CATCH_UP
    scheduler(stores).enqueue_jobs()
    run_jobs()
    assert _slots(stores) == [current.isoformat()]  # one run loads everything since the cursor


def test_a_vanished_entry_comes_back_where_it_left_off(temps, stores, run_jobs):
    current = slot_start(EVERY, datetime.now(UTC))
    earlier = current - timedelta(seconds=2 * EVERY)
    assert enqueue_run(stores, "temps", slot=earlier.isoformat()) is not None
    register_schedules(stores, [temps])  # e.g. the keeper, after the entry was deleted
    assert _due(stores) == earlier + timedelta(seconds=EVERY)
    scheduler(stores).enqueue_jobs()
    run_jobs()
    assert _slots(stores) == [earlier.isoformat(), (current - timedelta(seconds=EVERY)).isoformat(),
                              current.isoformat()]  # fmt: skip


def test_a_resumed_schedule_does_not_run_the_slots_it_was_paused_for(temps, stores):
    from cxd.catalog import save_source

    save_source(stores.db, temps)  # pause/resume act on the stored source
    current = slot_start(EVERY, datetime.now(UTC))
    enqueue_run(stores, "temps", slot=(current - timedelta(seconds=3 * EVERY)).isoformat())
    register_schedules(stores, [temps])
    pause_schedule(stores, "temps")
    assert ENTRY not in scheduler(stores)
    resume_schedule(stores, "temps")
    assert _due(stores) == current


def test_a_cron_entry_that_ran_before_owes_its_current_slot(declare, tmp_path, stores):
    spec = declare(
        name="nightly", type="file", options={"path": f"{tmp_path}/*.csv"}, time_column="at",
        columns=[{"name": "at", "type": "timestamptz"}], schedule={"full_refresh": "*/5 * * * *"},
    )  # fmt: skip
    key = scheduler(stores).scheduled_jobs_key
    now = datetime.now(UTC)
    register_schedules(stores, [spec])  # never ran: waits for the next fire time
    nxt = stores.redis.zscore(key, "cxd-schedule-nightly-full")
    assert nxt == slot_start("*/5 * * * *", now + timedelta(minutes=5)).timestamp()

    scheduler(stores).cancel("cxd-schedule-nightly-full")
    current = slot_start("*/5 * * * *", now)
    create_run(stores.db, "nightly", "full", slot=(current - timedelta(minutes=5)).isoformat())
    register_schedules(stores, [spec])  # it ran the fire before: the current one is owed
    assert stores.redis.zscore(key, "cxd-schedule-nightly-full") == current.timestamp()


SLOW = """
import io, time
import pandas as pd
from plugins.base import Payload, SourcePlugin

class Slow(SourcePlugin):
    '''A growing CSV read from the byte offset in the cursor, slowly.'''

    def fetch(self, cursor):
        offset = int(cursor or 0)
        with open(self.options["path"], "rb") as fh:
            data = fh.read()[offset:]
        time.sleep(0.5)
        yield Payload(content=data, media_type="text/plain", meta={"end": offset + len(data)})

    def ingest(self, payload):
        return pd.read_csv(io.BytesIO(payload.content), header=None, names=["id", "at"], dtype=str)

    def next_cursor(self, cursor, payloads):
        return payloads[-1].meta["end"] if payloads else cursor
"""


def test_runs_of_one_dataset_never_overlap(declare, plugin_file, tmp_path, stores):
    """Two slots' runs on two workers at once: the second waits, so the rows the first
    fetched are not fetched again from the same cursor."""
    plugin_file("slow", SLOW)
    source = tmp_path / "s.csv"
    source.write_text("".join(f"{i},2026-05-05T00:00:0{i}Z\n" for i in range(10)))
    declare(
        name="slow",
        type="python",
        plugin="slow",
        options={"path": str(source)},
        columns=[{"name": "id", "type": "bigint"}, {"name": "at", "type": "timestamptz"}],
        time_column="at",
    )  # no key: rows loaded twice would show
    ids = [create_run(stores.db, "slow", slot=f"2026-05-05T00:0{n}:00+00:00") for n in (0, 1)]
    done = []
    threads = [
        threading.Thread(target=lambda r=r: done.append(execute_run(stores, r))) for r in ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["status"] for r in done) == ["succeeded", "succeeded"]
    assert sorted(r["rows_loaded"] for r in done) == [0, 10]
    stats = stores.db.fetchone("SELECT count(*) AS n, count(DISTINCT id) AS d FROM raw.slow")
    assert stats == {"n": 10, "d": 10}

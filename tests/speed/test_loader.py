"""The hand-off to batch: exactly once through crashes, trimming, dead letters, schedule."""

from __future__ import annotations

import signal
import time

import pytest

from batch.load import get_watermark
from speed.keys import LOADER_GROUP, dead_key, log_key
from speed.loader import Loader, drain, register_schedule
from speed.stream import append, backlog, parse_id
from tests.speed.conftest import event


def raw_ids(stores, dataset: str) -> list[str]:
    rows = stores.db.fetchall(f'SELECT _stream_id FROM raw."{dataset}"')
    return [r["_stream_id"] for r in rows]


def test_drain_loads_every_event_once_with_the_watermark(stores, live):
    live("events")
    ids = append(stores.redis, "events", [event(i) for i in range(5000)])
    pubsub = stores.redis.pubsub()
    pubsub.subscribe("cxd:{events}:changed")
    pubsub.get_message(timeout=2)
    assert drain(stores, "events", batch_size=1000) == 5000
    assert sorted(raw_ids(stores, "events"), key=parse_id) == ids
    assert get_watermark(stores.db, "events")["stream_id"] == ids[-1]
    assert backlog(stores.redis, "events") == 0
    assert stores.redis.xpending(log_key("events"), LOADER_GROUP)["pending"] == 0
    assert pubsub.get_message(timeout=2)["data"] == b"batch"
    pubsub.close()
    assert drain(stores, "events") == 0  # nothing is loaded twice


CRASH_AFTER_COMMIT = """
import os, signal, sys
from cxd.config import load_settings
from cxd.stores import open_stores
from speed.loader import Loader

class Crashing(Loader):
    def after_commit(self, dataset, ids):
        os.kill(os.getpid(), signal.SIGKILL)  # dies between commit and XACK

Crashing(open_stores(load_settings()), batch_size=1000, consumer="doomed").load(sys.argv[1])
"""


def test_loader_killed_between_commit_and_ack_never_reloads(stores, live, loader_process):
    live("events")
    ids = append(stores.redis, "events", [event(i) for i in range(3000)])
    proc = loader_process("events", script=CRASH_AFTER_COMMIT)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert get_watermark(stores.db, "events")["stream_id"] == ids[999]
    assert stores.redis.xpending(log_key("events"), LOADER_GROUP)["pending"] == 1000  # never acked

    report = Loader(stores, batch_size=1000, max_batches=100).load("events")
    assert (report.claimed, report.skipped, report.loaded) == (1000, 1000, 2000)
    loaded = raw_ids(stores, "events")
    assert len(loaded) == len(set(loaded)) == 3000
    assert sorted(loaded, key=parse_id) == ids
    assert backlog(stores.redis, "events") == 0
    log = stores.db.fetchall("SELECT event, details FROM cxd.speed_log WHERE dataset = 'events'")
    assert [(r["event"], r["details"]["consumers"]) for r in log] == [("claimed", {"doomed": 1000})]


CRASH_WHILE_READING_AHEAD = """
import os, signal, sys, time
from cxd.config import load_settings
from cxd.stores import open_stores
from speed.loader import Loader

class Crashing(Loader):
    commits = 0

    def after_commit(self, dataset, ids):
        self.commits += 1
        if self.commits == 2:  # the third batch is being read ahead meanwhile
            time.sleep(0.5)  # (let that read reach Redis)
            os.kill(os.getpid(), signal.SIGKILL)

loader = Crashing(open_stores(load_settings()), batch_size=1000, consumer="doomed",
                  max_batches=1000, read_ahead=True)
loader.load(sys.argv[1])
"""


def test_a_draining_loader_killed_while_reading_ahead_loses_and_repeats_nothing(
    stores, live, loader_process
):
    live("events")
    ids = append(stores.redis, "events", [event(i) for i in range(5000)])
    proc = loader_process("events", script=CRASH_WHILE_READING_AHEAD)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert get_watermark(stores.db, "events")["stream_id"] == ids[1999]
    # the second batch (committed, not acknowledged) and the third (read ahead) wait
    assert stores.redis.xpending(log_key("events"), LOADER_GROUP)["pending"] == 2000
    assert drain(stores, "events", batch_size=1000) == 3000
    loaded = raw_ids(stores, "events")
    assert len(loaded) == len(set(loaded)) == 5000
    assert sorted(loaded, key=parse_id) == ids
    assert backlog(stores.redis, "events") == 0
    assert stores.redis.xpending(log_key("events"), LOADER_GROUP)["pending"] == 0


def test_trimming_never_removes_an_unloaded_entry(stores, live):
    live("events", speed={"grace": "0s"})
    ids = append(stores.redis, "events", [event(i) for i in range(3000)])
    paused = Loader(stores, batch_size=1000, max_batches=1)  # loads one batch, then "pauses"
    for round_ in range(3):
        paused.load("events")
        w = get_watermark(stores.db, "events")["stream_id"]
        time.sleep(0.01)
        ids += append(stores.redis, "events", [event(i) for i in range(500)])
        kept = {e[0].decode() for e in stores.redis.xrange(log_key("events"))}
        unloaded = [i for i in ids if parse_id(i) > parse_id(w)]
        assert set(unloaded) <= kept, f"round {round_}: an unloaded entry was trimmed"
        assert backlog(stores.redis, "events") == len(unloaded)
    assert stores.redis.xlen(log_key("events")) < len(ids)  # loaded entries did get trimmed
    drain(stores, "events")
    assert sorted(raw_ids(stores, "events"), key=parse_id) == ids


def test_poison_event_reaches_dead_letters_after_n_failures_while_the_rest_load(stores, live):
    live("events")
    good = append(stores.redis, "events", [event(i) for i in range(10)])
    poison = append(stores.redis, "events", [event(10, value="hot")])[0]
    good += append(stores.redis, "events", [event(i) for i in range(11, 16)])
    garbage = stores.redis.xadd(log_key("events"), {"d": b"{not json"}).decode()
    stores.redis.incr("cxd:{events}:backlog")
    good += append(stores.redis, "events", [event(i) for i in range(16, 21)])
    loader = Loader(stores, max_failures=3)
    for _ in range(2):
        report = loader.load("events")
        assert report.dead == 0
        assert stores.redis.xlen(dead_key("events")) == 0
    assert sorted(raw_ids(stores, "events"), key=parse_id) == good[:10]  # the ones before it
    assert get_watermark(stores.db, "events")["stream_id"] == good[9]

    report = loader.load("events")  # third failure: dead-lettered, the next ones load
    assert (report.dead, report.loaded) == (1, 5)
    assert get_watermark(stores.db, "events")["stream_id"] == good[14]
    reports = [loader.load("events") for _ in range(2)]  # its failures 2 and 3 (1 was above)
    assert [(r.dead, r.loaded) for r in reports] == [(0, 0), (1, 5)]

    dead = stores.redis.xrange(dead_key("events"))
    assert [f[b"id"].decode() for _, f in dead] == [poison, garbage]
    assert b"hot" in dead[0][1][b"reason"]  # the reason names the value Postgres refused
    assert b"not JSON" in dead[1][1][b"reason"]
    assert dead[0][1][b"failures"] == b"3"
    assert b'"value":"hot"' in dead[0][1][b"d"]
    assert sorted(raw_ids(stores, "events"), key=parse_id) == good
    assert get_watermark(stores.db, "events")["stream_id"] == good[-1]
    assert backlog(stores.redis, "events") == 0
    log = stores.db.fetchall(
        "SELECT stream_id, reason FROM cxd.speed_log WHERE event = 'dead_letter' ORDER BY id"
    )
    assert [r["stream_id"] for r in log] == [poison, garbage]
    assert "hot" in log[0]["reason"]


@pytest.fixture
def own_worker_stores():
    """The in-process rq job opens process-wide stores; close them so no later test's
    reset leaves it a pool of terminated connections."""
    from cxd import stores as stores_module

    yield
    for cached in stores_module._process_stores.values():
        cached.close()
    stores_module._process_stores.clear()


def test_loader_runs_as_a_scheduled_rq_job(stores, live, run_jobs, own_worker_stores):
    from rq_scheduler import Scheduler

    live("events")
    ids = append(stores.redis, "events", [event(i) for i in range(50)])
    assert register_schedule(stores, every=5) is True
    assert register_schedule(stores, every=5) is False  # never doubled
    Scheduler(queue_name="cxd-speed", connection=stores.redis).enqueue_jobs()
    assert run_jobs() == 1
    assert sorted(raw_ids(stores, "events"), key=parse_id) == ids


def test_ingest_keeper_loads_live_events_continuously(stores, live, settings):
    """What `cxd up` runs: cxd-ingest's keeper loads every live dataset about every second."""
    import threading

    from cxd.ingest import keeper

    live("events")
    stop = threading.Event()
    thread = threading.Thread(target=keeper, args=(settings, stop))
    thread.start()
    try:
        for round_ in range(3):
            ids = append(stores.redis, "events", [event(i) for i in range(100)])
            deadline = time.monotonic() + 30
            while get_watermark(stores.db, "events")["stream_id"] != ids[-1]:
                assert time.monotonic() < deadline, f"round {round_}: not loaded within 30 s"
                time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert len(raw_ids(stores, "events")) == 300
    assert backlog(stores.redis, "events") == 0

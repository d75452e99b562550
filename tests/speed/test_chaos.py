"""Chaos: events posted while a real loader process is killed -9 again and again.

Reconciliation of the acknowledged event ids against raw + stream must show 0 lost and 0
duplicated, and the watermark must never decrease. CI size 20,000 events; ``CXD_SOAK=1``
for 200,000.
"""

from __future__ import annotations

import random
import threading
import time

from batch.load import get_watermark
from speed.loader import drain
from speed.stream import backlog, parse_id, read_after
from tests.speed.conftest import SOAK, event

TOTAL = 200_000 if SOAK else 20_000
BATCH = 500 if SOAK else 200
RATE = 5_000 if SOAK else 2_000  # events/s the producer aims for


def test_loader_killed_every_second_loses_and_duplicates_nothing(
    stores, live, ingest_client, auth, loader_process
):
    live("events")
    headers = auth("ingest")
    stop = threading.Event()
    marks: list[tuple[int, int]] = []
    kills = 0

    def watch_watermark():
        while not stop.is_set():
            marks.append(parse_id(get_watermark(stores.db, "events")["stream_id"]))
            time.sleep(0.02)

    def chaos():
        nonlocal kills
        while not stop.is_set():
            stop.wait(random.uniform(0, 1))  # a backlog builds up meanwhile
            proc = loader_process("events", interval=0.05, batch_size=250)
            before = get_watermark(stores.db, "events")["stream_id"]
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not stop.is_set():  # until it is loading
                if get_watermark(stores.db, "events")["stream_id"] != before:
                    break
                time.sleep(0.01)
            time.sleep(random.uniform(0.05, 0.8))
            proc.kill()  # SIGKILL: no clean-up of any kind
            proc.wait()
            kills += 1

    threads = [threading.Thread(target=watch_watermark), threading.Thread(target=chaos)]
    for t in threads:
        t.start()
    acked: dict[str, int] = {}
    started = time.monotonic()
    try:
        for first in range(0, TOTAL, BATCH):
            body = [event(n) for n in range(first, first + BATCH)]
            r = ingest_client.post("/hooks/events", json=body, headers=headers)
            assert r.status_code == 202, r.get_json()
            acked.update(zip(r.get_json()["ids"], range(first, first + BATCH), strict=True))
            ahead = (first + BATCH) / RATE - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert kills >= 3, "the loader was not killed often enough to test anything"

    # part of it is loaded by the killed processes; the rest stays in the stream
    w = get_watermark(stores.db, "events")["stream_id"]
    rows = stores.db.fetchall('SELECT _stream_id, n FROM raw."events"')
    in_raw = [r["_stream_id"] for r in rows]
    in_stream = {eid: rec["n"] for eid, rec in read_after(stores.redis, "events", w)}
    assert len(in_raw) == len(set(in_raw)), "an event was loaded twice"
    assert all(parse_id(i) <= parse_id(w) for i in in_raw)
    assert set(in_raw).isdisjoint(in_stream), "an event is counted in both layers"
    lost = set(acked) - set(in_raw) - set(in_stream)
    assert not lost, f"{len(lost)} acknowledged events lost"
    assert {r["_stream_id"]: r["n"] for r in rows} | in_stream == acked

    drain(stores, "events")  # a clean loader finishes the job
    rows = stores.db.fetchall('SELECT _stream_id, n FROM raw."events"')
    assert len(rows) == TOTAL
    assert {r["_stream_id"]: r["n"] for r in rows} == acked
    assert backlog(stores.redis, "events") == 0
    assert all(a <= b for a, b in zip(marks, marks[1:], strict=False)), "the watermark went back"
    assert len(in_raw) > 0  # the killed loaders did real work
    claims = stores.db.fetchall("SELECT details FROM cxd.speed_log WHERE event = 'claimed'")
    print(f"{kills} kills, {len(in_raw)} loaded by killed loaders, {len(claims)} take-overs")

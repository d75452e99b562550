"""Changes since a cursor, across the speed and batch layers."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from batch.load import load_rows
from speed.loader import drain
from speed.stream import append
from tests.serving.livekit import declare_events, event


def page(client, headers, since=None, limit=None):
    args = {k: v for k, v in (("since", since), ("limit", limit)) if v is not None}
    r = client.get("/api/datasets/events/changes", query_string=args, headers=headers)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_rows_from_both_layers_once_across_a_hand_off(stores, client, auth):
    declare_events(stores)
    h = auth("read")
    append(stores.redis, "events", [event(1), event(2), event(3)])
    first = page(client, h)
    assert [r["id"] for r in first["rows"]] == [1, 2, 3]
    assert all(r["_stream_id"] for r in first["rows"])
    assert first["freshness"]["batch_watermark"] == "0-0"
    assert first["freshness"]["speed_high_water"] == first["rows"][-1]["_stream_id"]

    assert drain(stores, "events") == 3  # handed off between two pages: not repeated
    again = page(client, h, first["next"])
    assert again["rows"] == []
    assert again["freshness"]["batch_watermark"] == first["rows"][-1]["_stream_id"]

    append(stores.redis, "events", [event(4), event(5)])
    assert drain(stores, "events") == 2  # handed off before it was read: comes from raw
    later = page(client, h, again["next"])
    assert [r["id"] for r in later["rows"]] == [4, 5]
    assert all(isinstance(r["_seq"], int) for r in later["rows"])
    assert page(client, h, later["next"])["rows"] == []
    # a reader starting from the beginning sees all five, from raw
    assert [r["id"] for r in page(client, h)["rows"]] == [1, 2, 3, 4, 5]


def test_cursor_is_unique_and_monotonic_while_paging(stores, client, auth):
    spec = declare_events(stores)
    h = auth("read")
    load_rows(stores.db, spec, [event(i) for i in range(10)])
    append(stores.redis, "events", [event(i) for i in range(10, 20)])
    cursors, seen = [], []
    since = None
    for _ in range(100):
        got = page(client, h, since, limit=3)
        if not got["rows"]:
            assert got["next"] == since  # nothing new: the same cursor again
            break
        cursors.append(got["next"])
        seen += [r["id"] for r in got["rows"]]
        since = got["next"]
    assert seen == list(range(20))
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)


def test_since_an_iso_time_returns_what_arrived_after_it(stores, client, auth):
    spec = declare_events(stores)
    h = auth("read")
    load_rows(stores.db, spec, [event(1)])
    append(stores.redis, "events", [event(2)])
    time.sleep(0.05)
    moment = datetime.now(UTC)
    time.sleep(0.05)
    load_rows(stores.db, spec, [event(3)])
    append(stores.redis, "events", [event(4)])
    got = page(client, h, moment.isoformat())
    assert sorted(r["id"] for r in got["rows"]) == [3, 4]
    z = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert sorted(r["id"] for r in page(client, h, z)["rows"]) == [3, 4]


def test_bad_requests_are_named(stores, client, auth):
    declare_events(stores)
    h = auth("read")
    r = client.get("/api/datasets/events/changes?since=yesterday-ish", headers=h)
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {"parameter": "since"}
    r = client.get("/api/datasets/events/changes?limit=0", headers=h)
    assert r.status_code == 400 and "limit" in r.get_json()["error"]["message"]
    assert client.get("/api/datasets/nope/changes", headers=h).status_code == 404
    assert client.get("/api/datasets/events/changes").status_code == 401


def test_paging_while_events_stream_and_batches_load_returns_each_event_once(stores, client, auth):
    """Every event id exactly once while appends, hand-offs and batch loads run."""
    spec = declare_events(stores)
    h = auth("read")
    n_live, n_batch = 600, 120
    done = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        return threading.Thread(target=run)

    def produce():
        rng = random.Random(1)
        i = 0
        while i < n_live:
            k = rng.randint(1, 6)
            append(stores.redis, "events", [event(j) for j in range(i, min(i + k, n_live))])
            i += k
            time.sleep(rng.random() * 0.004)

    def hand_off():
        rng = random.Random(2)
        while not done.is_set():
            drain(stores, "events", batch_size=rng.randint(1, 40))
            time.sleep(rng.random() * 0.01)

    def load_batches():
        for start in range(0, n_batch, 8):
            ids = range(100_000 + start, 100_000 + start + 8)
            load_rows(stores.db, spec, [event(i) for i in ids])
            time.sleep(0.01)

    workers = [guarded(produce), guarded(load_batches)]
    loader = guarded(hand_off)
    for t in [*workers, loader]:
        t.start()
    seen: Counter = Counter()
    since, pages = None, 0
    while pages < 2000:  # bounded: a cursor that never advances must fail, not hang
        got = page(client, h, since, limit=17)
        pages += 1
        seen.update(r["id"] for r in got["rows"])
        since = got["next"]
        if not got["rows"] and not any(t.is_alive() for t in workers):
            if done.is_set():
                break
            done.set()
            loader.join()
            drain(stores, "events")
    assert not errors, errors
    expected = set(range(n_live)) | set(range(100_000, 100_000 + n_batch))
    assert set(seen) == expected
    repeated = {i: n for i, n in seen.items() if n > 1}
    assert not repeated, f"returned more than once: {repeated}"
    assert pages > 20  # paged while the writers ran, not in one go

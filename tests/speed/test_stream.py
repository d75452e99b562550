"""The write path and the read interface: stream, latest values, counters, notifications."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cxd.errors import BadInput
from speed import counters
from speed.exceptions import Backpressure
from speed.keys import log_key, notify_channel
from speed.stream import append, backlog, high_water, latest, parse_id, read_after
from tests.speed.conftest import event


def test_append_returns_ids_only_once_the_events_are_in_redis(stores):
    ids = append(stores.redis, "events", [event(i) for i in range(1000)])
    assert len(ids) == 1000 and ids == sorted(ids, key=parse_id)
    stored = stores.redis.xrange(log_key("events"))
    assert [e[0].decode() for e in stored] == ids
    assert [json.loads(f[b"d"])["n"] for _, f in stored] == list(range(1000))
    assert backlog(stores.redis, "events") == 1000
    assert high_water(stores.redis, "events") == ids[-1]
    assert [r["n"] for _, r in read_after(stores.redis, "events", ids[10])] == list(range(11, 1000))


def test_latest_value_once_per_key_per_batch_last_wins(stores, live):
    spec = live("levels", kind="instantaneous", key=["device"])
    batch = [event(1, "a", 1.0), event(2, "b", 2.0), event(3, "a", 3.0)]
    append(stores.redis, "levels", batch, spec=spec)
    assert sorted((r["device"], r["value"]) for r in latest(stores.redis, "levels")) == [
        ("a", 3.0),
        ("b", 2.0),
    ]
    append(stores.redis, "levels", [event(4, "b", 5.5)], spec=spec)
    assert sorted((r["device"], r["value"]) for r in latest(stores.redis, "levels")) == [
        ("a", 3.0),
        ("b", 5.5),
    ]


def test_counters_change_atomically_with_their_timestamp(stores, live):
    before = datetime.now(UTC).replace(microsecond=0)
    assert counters.incr(stores.redis, "rooms", "occupancy")["value"] == 1
    got = counters.incr(stores.redis, "rooms", "occupancy", -3)
    assert got["value"] == -2
    assert before <= got["at"] <= datetime.now(UTC)
    at = datetime(2026, 5, 5, 10, tzinfo=UTC)
    assert counters.incr(stores.redis, "rooms", "occupancy", 2, at=at) == {"value": 0, "at": at}
    assert counters.get(stores.redis, "rooms", "occupancy") == {"value": 0, "at": at}
    assert counters.get(stores.redis, "rooms", "nobody") is None

    # declared counters move with the events that carry them, in the same script
    spec = live("doors", speed={"counters": {"inside": {"by": "value", "group": ["device"]}}})
    append(
        stores.redis,
        "doors",
        [event(1, "hall", 1), event(2, "hall", 1), event(3, "lab", 1)],
        spec=spec,
    )
    append(stores.redis, "doors", [event(4, "hall", -1)], spec=spec)
    got = counters.all_counters(stores.redis, "doors")
    assert {k: v["value"] for k, v in got.items()} == {'inside:["hall"]': 1, 'inside:["lab"]': 1}
    assert got[counters.counter_name("inside", {"device": "hall"})]["at"] is not None
    with pytest.raises(BadInput, match="counter 'inside' counts by 'value'"):
        append(stores.redis, "doors", [event(5, "hall", "many")], spec=spec)
    assert stores.redis.xlen(log_key("doors")) == 4  # the refused batch stored nothing


def test_every_append_is_announced_on_the_dataset_channel(stores):
    pubsub = stores.redis.pubsub()
    pubsub.subscribe(notify_channel("events"))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    append(stores.redis, "events", [event(1)])
    message = pubsub.get_message(timeout=2)
    assert message["data"] == b"speed"
    pubsub.close()


def test_read_after_bounded_by_event_time_keeps_late_events(stores):
    ids = append(stores.redis, "events", [event(5), event(30), event(1)])  # the last one is late
    rows = read_after(
        stores.redis, "events", "0-0", time_column="at",
        start="2026-05-05T10:00:00Z", end=datetime(2026, 5, 5, 10, 0, 10, tzinfo=UTC),
    )  # fmt: skip
    assert [(eid, r["n"]) for eid, r in rows] == [(ids[0], 5), (ids[2], 1)]
    assert [r["n"] for _, r in read_after(stores.redis, "events", ids[0], count=1)] == [30]


def test_backpressure_engages_at_the_cap_and_releases_when_loaded(
    stores, live, ingest_client, auth
):
    from speed.loader import drain

    spec = live("capped", speed={"max_backlog": 100})
    append(stores.redis, "capped", [event(i) for i in range(90)], spec=spec)
    with pytest.raises(Backpressure) as caught:
        append(stores.redis, "capped", [event(i) for i in range(11)], spec=spec)
    assert caught.value.retry_after >= 1
    assert backlog(stores.redis, "capped") == 90  # nothing of the refused batch was stored
    append(stores.redis, "capped", [event(i) for i in range(10)], spec=spec)  # exactly the cap

    r = ingest_client.post("/hooks/capped", json=event(1000), headers=auth("ingest"))
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) >= 1
    assert r.get_json()["error"]["code"] == "backpressure"

    assert drain(stores, "capped") == 100
    assert backlog(stores.redis, "capped") == 0
    r = ingest_client.post("/hooks/capped", json=event(1000), headers=auth("ingest"))
    assert r.status_code == 202, r.get_json()

"""Webhook JSON on cxd-ingest: bodies, validation, idempotency, auth, size limit, backpressure."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from cxd.catalog import parse_source, save_source
from speed.stream import backlog, read_after

COLUMNS = [
    {"name": "event_id", "type": "text"},
    {"name": "sensor", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "level", "type": "double precision"},
]


def declare(stores, name="levels", **extra):
    raw = {
        "name": name,
        "type": "webhook",
        "kind": "time_series",
        "columns": COLUMNS,
        "key": ["event_id"],
        "time_column": "at",
        **extra,
    }
    spec = parse_source(raw)
    save_source(stores.db, spec)
    return spec


def event(n, **kw):
    return {
        "event_id": f"e{n}",
        "sensor": "s1",
        "at": f"2026-05-05T10:00:{n:02d}Z",
        "level": n,
        **kw,
    }


def stored(stores, name="levels"):
    return [rec for _, rec in read_after(stores.redis, name, "0-0")]


def test_object_array_and_ndjson_bodies_are_stored(stores, ingest_client, auth):
    declare(stores)
    headers = auth("ingest")
    one = ingest_client.post("/hooks/levels", json=event(1), headers=headers)
    assert one.status_code == 202 and one.get_json()["accepted"] == 1
    many = ingest_client.post("/hooks/levels", json=[event(2), event(3)], headers=headers)
    assert many.status_code == 202 and many.get_json()["accepted"] == 2
    ndjson = "\n".join(json.dumps(event(n)) for n in (4, 5, 6)) + "\n"
    nd = ingest_client.post(
        "/hooks/levels",
        data=ndjson,
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert nd.status_code == 202 and nd.get_json()["accepted"] == 3
    pretty = ingest_client.post(
        "/hooks/levels",
        data=json.dumps(event(7), indent=2),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert pretty.status_code == 202, pretty.get_json()
    assert [r["event_id"] for r in stored(stores)] == [f"e{n}" for n in range(1, 8)]


def test_bad_records_are_each_named_and_nothing_is_stored(stores, ingest_client, auth):
    declare(stores)
    body = [
        event(1),
        {"event_id": "e2", "sensor": "s1", "at": "yesterday", "level": "high"},
        event(3, colour="red"),
        "not an object",
        {"sensor": "s1", "at": "2026-05-05T10:00:00Z"},
    ]
    r = ingest_client.post("/hooks/levels", json=body, headers=auth("ingest"))
    assert r.status_code == 400
    problems = {(p["index"], p["field"]) for p in r.get_json()["error"]["details"]["records"]}
    assert problems == {(1, "at"), (1, "level"), (2, "colour"), (3, ""), (4, "event_id")}
    assert "4 of 5 record(s) are invalid" in r.get_json()["error"]["message"]
    assert backlog(stores.redis, "levels") == 0
    bad_json = ingest_client.post(
        "/hooks/levels",
        data=b'{"event_id": ',
        headers={**auth("ingest"), "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert "not JSON" in bad_json.get_json()["error"]["message"]
    bad_line = ingest_client.post(
        "/hooks/levels",
        data=json.dumps(event(1)) + "\n{oops\n",
        headers={**auth("ingest"), "Content-Type": "application/x-ndjson"},
    )
    assert bad_line.status_code == 400
    assert "line 2" in bad_line.get_json()["error"]["message"]
    latin1 = ingest_client.post("/hooks/levels", data=b"\xff\xfe", headers=auth("ingest"))
    assert latin1.status_code == 400
    assert backlog(stores.redis, "levels") == 0


def test_repeated_event_ids_are_acknowledged_and_stored_once(stores, ingest_client, auth):
    declare(stores, options={"event_id": "event_id"})
    headers = auth("ingest")
    first = ingest_client.post("/hooks/levels", json=[event(1), event(2)], headers=headers)
    assert first.status_code == 202
    assert first.get_json() | {"ids": None} == {"accepted": 2, "duplicates": 0, "ids": None}
    again = ingest_client.post(
        "/hooks/levels", json=[event(2), event(3), event(3)], headers=headers
    )
    assert again.status_code == 202
    assert again.get_json()["accepted"] == 3
    assert again.get_json()["duplicates"] == 2
    assert [r["event_id"] for r in stored(stores)] == ["e1", "e2", "e3"]
    # the ids are remembered with a TTL so the memory of them stays bounded
    ttl = stores.redis.pttl("cxd:{levels}:seen:ev:e1")
    assert 0 < ttl <= 86_400_000


def test_idempotency_key_makes_a_request_count_once(stores, ingest_client, auth):
    declare(stores)
    headers = {**auth("ingest"), "Idempotency-Key": "req-42"}
    for _ in range(3):
        r = ingest_client.post("/hooks/levels", json=[event(1), event(2)], headers=headers)
        assert r.status_code == 202
        assert r.get_json()["accepted"] == 2
    assert r.get_json()["duplicates"] == 2
    other = ingest_client.post(
        "/hooks/levels", json=[event(1)], headers={**headers, "Idempotency-Key": "req-43"}
    )
    assert other.status_code == 202 and other.get_json()["duplicates"] == 0
    assert len(stored(stores)) == 3


def test_a_refused_append_records_no_ids_so_the_retry_stores(stores, ingest_client, auth):
    from speed.loader import drain

    declare(stores, options={"event_id": "event_id"}, speed={"max_backlog": 2})
    assert (
        ingest_client.post(
            "/hooks/levels", json=[event(1), event(2)], headers=auth("ingest")
        ).status_code
        == 202
    )
    full = ingest_client.post("/hooks/levels", json=[event(3)], headers=auth("ingest"))
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "2"
    assert stores.redis.exists("cxd:{levels}:seen:ev:e3") == 0
    assert drain(stores, "levels") == 2  # the loader catches up: the backlog is free again
    retry = ingest_client.post("/hooks/levels", json=[event(3)], headers=auth("ingest"))
    assert retry.status_code == 202
    assert retry.get_json()["duplicates"] == 0
    assert [r["event_id"] for r in stored(stores)][-1] == "e3"


def test_a_retry_after_a_lost_answer_gets_the_same_ids_and_stores_nothing(
    stores, ingest_client, auth
):
    """The first attempt's append succeeded but its process died before it answered (here:
    the receiver's own storing step, called directly): the sender's retry is answered with
    the ids of the first attempt and nothing is stored twice."""
    from plugins.records import store_once

    spec = declare(stores, options={"event_id": "event_id"})
    body = [event(1), event(2)]
    first = store_once(stores.redis, spec, body, event_id="event_id", request_id="req-7")
    retry = ingest_client.post(
        "/hooks/levels", json=body, headers={**auth("ingest"), "Idempotency-Key": "req-7"}
    )
    assert retry.status_code == 202
    assert retry.get_json()["ids"] == first.ids
    assert retry.headers["Idempotent-Replayed"] == "true"
    # without the key, the event ids alone find the same stream ids
    again = ingest_client.post("/hooks/levels", json=body[::-1], headers=auth("ingest"))
    assert again.get_json()["ids"] == first.ids[::-1]
    assert again.get_json()["duplicates"] == 2
    assert len(stored(stores)) == 2 and backlog(stores.redis, "levels") == 2


def test_concurrent_repeats_store_once_and_all_get_the_same_ids(stores, ingest_client, auth):
    from concurrent.futures import ThreadPoolExecutor

    declare(stores, options={"event_id": "event_id"})
    headers = auth("ingest")
    assert ingest_client.post("/hooks/levels", json=event(0), headers=headers).status_code == 202
    body = [event(n) for n in range(1, 21)]

    def post(k):
        extra = {"Idempotency-Key": "burst"} if k % 2 else {}
        return ingest_client.post("/hooks/levels", json=body, headers={**headers, **extra})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(16)))
    assert {a.status_code for a in answers} == {202}
    assert len({tuple(a.get_json()["ids"]) for a in answers}) == 1
    assert sum(a.get_json()["duplicates"] == 0 for a in answers) == 1
    assert [r["event_id"] for r in stored(stores)] == [f"e{n}" for n in range(21)]
    assert backlog(stores.redis, "levels") == 21


def test_latest_values_and_counters_skip_repeated_events(stores, ingest_client, auth):
    from speed.counters import get
    from speed.stream import latest

    declare(
        stores,
        kind="instantaneous",
        key=["sensor"],
        options={"event_id": "event_id"},
        speed={"counters": {"total": {"by": "level"}}},
    )
    headers = auth("ingest")
    ingest_client.post("/hooks/levels", json=[event(1), event(2)], headers=headers)
    # e2 again with another level: a repeat changes neither the latest value nor the count
    r = ingest_client.post("/hooks/levels", json=[event(3), event(2, level=99)], headers=headers)
    assert r.get_json()["duplicates"] == 1
    assert [v["level"] for v in latest(stores.redis, "levels")] == [3]
    assert get(stores.redis, "levels", "total")["value"] == 6


def test_per_source_token(stores, ingest_client, auth):
    declare(stores, secrets={"token": "hook-token-1"})
    ok = ingest_client.post(
        "/hooks/levels", json=event(1), headers={"Authorization": "Bearer hook-token-1"}
    )
    assert ok.status_code == 202
    for headers in ({}, {"Authorization": "Bearer wrong"}, auth("ingest")):
        r = ingest_client.post("/hooks/levels", json=event(2), headers=headers)
        assert r.status_code == 401, headers
    assert len(stored(stores)) == 1


def test_hmac_signature(stores, ingest_client):
    declare(stores, secrets={"hmac_secret": "shh"})
    body = json.dumps([event(1), event(2)]).encode()
    good = hmac.new(b"shh", body, hashlib.sha256).hexdigest()
    r = ingest_client.post(
        "/hooks/levels",
        data=body,
        headers={"X-Cxd-Signature": f"sha256={good}", "Content-Type": "application/json"},
    )
    assert r.status_code == 202, r.get_json()
    tampered = body.replace(b"s1", b"s2")
    for headers in (
        {"X-Cxd-Signature": f"sha256={good}"},
        {"X-Cxd-Signature": "sha256=" + "0" * 64},
        {},
    ):
        r = ingest_client.post("/hooks/levels", data=tampered, headers=headers)
        assert r.status_code == 401
    assert len(stored(stores)) == 2


def test_body_over_the_limit_gets_413_without_being_read(stores, ingest_client, auth):
    declare(stores, options={"max_body": "1KiB"})
    big = json.dumps([event(n % 60) for n in range(40)]).encode()
    assert len(big) > 1024
    r = ingest_client.post(
        "/hooks/levels", data=big, headers={**auth("ingest"), "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert "1024 bytes" in r.get_json()["error"]["message"]

    assert backlog(stores.redis, "levels") == 0


def test_settings_are_checked_all_at_once(stores):
    from plugins.exceptions import PluginConfigError
    from plugins.registry import plugin_for

    spec = parse_source(
        {
            "name": "levels",
            "type": "webhook",
            "columns": COLUMNS,
            "time_column": "at",
            "options": {"event_id": "nope", "max_body": "lots", "dedup_ttl": "forever"},
        }
    )
    with pytest.raises(PluginConfigError) as err:
        plugin_for(spec)
    assert len(err.value.details["problems"]) == 3


def test_health_counts_messages_and_errors(stores, ingest_client, auth):
    from plugins.health import read_health

    declare(stores, options={"event_id": "event_id"})
    ingest_client.post("/hooks/levels", json=[event(1), event(2)], headers=auth("ingest"))
    ingest_client.post("/hooks/levels", json=[event(2)], headers=auth("ingest"))
    ingest_client.post("/hooks/levels", json=[{"level": "x"}], headers=auth("ingest"))
    status = read_health(stores.redis, "levels")
    assert status["messages"] == 3
    assert status["duplicates"] == 1
    assert status["errors"] == 1
    assert "invalid" in status["last_error"]
    assert status["last_message_at"].startswith("20")


def test_a_large_batch_is_read_whole(stores, ingest_client, auth):
    declare(stores)
    body = "\n".join(json.dumps(event(n % 60, event_id=f"e{n}")) for n in range(5000))
    assert len(body) > 400_000
    r = ingest_client.post(
        "/hooks/levels",
        data=body,
        headers={**auth("ingest"), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 202
    assert r.get_json()["accepted"] == 5000
    assert backlog(stores.redis, "levels") == 5000

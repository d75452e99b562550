"""Websocket push on /ws with real clients (websocket-client) against a real server."""

from __future__ import annotations

import json
import socket
import time

import pytest
import websocket

from batch.load import load_rows
from query_router.saved import save_query
from serving import create_app
from speed.loader import drain
from speed.stream import append
from tests.serving.livekit import declare_events, event, running_server

PING = 0.5


@pytest.fixture
def server(stores):
    """A real threaded HTTP server for the cxd-server app; yields (address, app)."""
    declare_events(stores)
    save_query(
        stores,
        {
            "name": "totals",
            "sql": "SELECT count(*) AS n, sum(v) AS total FROM events WHERE v > :min_v",
            "params": [{"name": "min_v", "type": "double precision"}],
        },
    )
    app = create_app(
        {
            "TESTING": True,
            "CXD_STORES": stores,
            "CXD_WS_PING_INTERVAL": PING,
            "CXD_WS_MAX_MESSAGE": 4096,
            "CXD_WS_MAX_CONNECTIONS": 8,
        }
    )
    with running_server(app) as address:
        yield address, app
    app.extensions["cxd.live"].stop()


@pytest.fixture
def connect(server, token):
    """Open a websocket-client connection to /ws (read token in the header by default)."""
    opened = []
    read = token("read")

    def open_ws(*, query: str = "", header: bool = True, **options):
        headers = [f"Authorization: Bearer {read}"] if header else []
        ws = websocket.create_connection(
            f"ws://{server[0]}/ws{query}", header=headers, timeout=5, **options
        )
        opened.append(ws)
        return ws

    open_ws.token = read
    yield open_ws
    for ws in opened:
        try:
            ws.close(timeout=0.5)
        except (websocket.WebSocketException, OSError):
            pass  # a peer the server already dropped
        finally:
            ws.shutdown()


def receive(ws, timeout: float = 5.0) -> dict:
    """The next JSON message within ``timeout`` seconds (pings are answered, not returned)."""
    deadline = time.monotonic() + timeout
    while True:
        ws.settimeout(max(deadline - time.monotonic(), 0.01))
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return json.loads(data)
        if time.monotonic() > deadline:
            raise websocket.WebSocketTimeoutException("nothing within the timeout")


def quiet(ws, seconds: float) -> None:
    """Nothing arrives on ``ws`` for ``seconds``."""
    with pytest.raises(websocket.WebSocketTimeoutException):
        receive(ws, timeout=seconds)


def send(ws, **msg) -> None:
    ws.send(json.dumps(msg))


def stats(server) -> dict:
    return server[1].extensions["cxd.live"].stats()


def wait_for(predicate, timeout: float = 5.0) -> float:
    """Seconds until ``predicate()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - start


def settle(server) -> None:
    """Wait until the hub listens and its start-up evaluations are over."""
    hub = server[1].extensions["cxd.live"]
    assert hub.listening.wait(5)
    counts = None
    while counts != (counts := [g["evaluations"] for g in hub.stats()["groups"]]):
        time.sleep(0.3)


def test_subscription_gets_the_result_then_each_change_quickly(stores, connect):
    ws = connect()
    send(ws, op="subscribe", id="1", query="totals", params={"min_v": 0})
    first = receive(ws)
    assert first["op"] == "data" and first["id"] == "1"
    assert first["rows"] == [{"n": 0, "total": None}]
    assert "plan" in first["freshness"]  # with no live event yet, batch alone is exact
    start = time.monotonic()
    append(stores.redis, "events", [event(1, 2.5)])
    update = receive(ws, timeout=2)
    assert time.monotonic() - start < 1.0
    assert update["rows"] == [{"n": 1, "total": 2.5}]
    assert update["freshness"]["speed_high_water"] != "0-0"
    assert update["freshness"]["plan"] in ("merge", "speed")
    # a hand-off changes where rows come from, not the result: nothing is pushed
    assert drain(stores, "events") == 1
    append(stores.redis, "events", [event(2, 1.0)])
    assert receive(ws, timeout=2)["rows"] == [{"n": 2, "total": 3.5}]


def test_identical_subscriptions_are_evaluated_once_per_change(stores, connect, server):
    a, b = connect(), connect()
    for ws in (a, b):
        send(ws, op="subscribe", id="t", query="totals", params={"min_v": 5})
        assert receive(ws)["rows"] == [{"n": 0, "total": None}]
    settle(server)
    (group,) = stats(server)["groups"]
    assert group["subscribers"] == 2
    before = group["evaluations"]
    append(stores.redis, "events", [event(1, 7.0)])
    for ws in (a, b):
        assert receive(ws, timeout=2)["rows"] == [{"n": 1, "total": 7.0}]
    time.sleep(0.3)
    assert stats(server)["groups"][0]["evaluations"] == before + 1
    # an event that leaves the result unchanged is evaluated but not pushed
    append(stores.redis, "events", [event(2, 1.0)])
    wait_for(lambda: stats(server)["groups"][0]["evaluations"] == before + 2)
    quiet(a, 0.5)


def test_dead_peer_is_dropped_within_two_ping_intervals(connect, server):
    alive, _dead = connect(), connect()  # the second never reads, so never answers
    wait_for(lambda: stats(server)["connections"] == 2)
    start = time.monotonic()
    alive.settimeout(0.05)
    # the dead peer never reads, so it never answers a ping; the live one answers in recv()
    while stats(server)["connections"] == 2:
        with pytest.raises(websocket.WebSocketTimeoutException):
            alive.recv()
        assert time.monotonic() - start < 2 * PING + 0.75
    assert stats(server)["connections"] == 1
    end = time.monotonic() + 3 * PING
    while time.monotonic() < end:  # a peer that answers stays
        with pytest.raises(websocket.WebSocketTimeoutException):
            alive.recv()
    assert stats(server)["connections"] == 1
    send(alive, op="ping")
    assert receive(alive) == {"op": "pong"}


def test_token_is_required_in_header_or_query(connect, server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(header=False)
    assert refused.value.status_code == 401
    ws = connect(query=f"?token={connect.token}", header=False)
    send(ws, op="ping")
    assert receive(ws) == {"op": "pong"}


def test_message_size_and_connection_caps(connect, server):
    ws = connect()
    ws.send(json.dumps({"op": "ping", "pad": "x" * 5000}))
    ws.settimeout(5)
    frame = ws.recv_data_frame(control_frame=True)[1]
    while frame.opcode != websocket.ABNF.OPCODE_CLOSE:
        frame = ws.recv_data_frame(control_frame=True)[1]
    assert int.from_bytes(frame.data[:2], "big") == 1009  # message too big
    wait_for(lambda: stats(server)["connections"] == 0)
    held = [connect() for _ in range(8)]
    wait_for(lambda: stats(server)["connections"] == 8)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect()
    assert refused.value.status_code == 503
    held[0].close()
    wait_for(lambda: stats(server)["connections"] == 7)
    connect()


def test_bad_messages_are_answered_with_errors(connect):
    ws = connect()
    ws.send("not json")
    assert receive(ws)["error"]["code"] == "bad_input"
    send(ws, op="subscribe", id="9", query="nope")
    err = receive(ws)
    assert err["op"] == "error" and err["id"] == "9" and err["error"]["code"] == "not_found"
    send(ws, op="subscribe", id="8", query="totals", params={"min_v": "warm"})
    err = receive(ws)
    assert err["op"] == "error" and err["id"] == "8"


def test_dataset_changes_are_pushed_once_across_a_hand_off(stores, connect):
    ws = connect()
    append(stores.redis, "events", [event(0)])  # before subscribing: not pushed
    send(ws, op="subscribe", id="c", dataset="events")
    ack = receive(ws)  # the first message: no rows yet, the cursor at the end
    assert ack["id"] == "c" and ack["rows"] == [] and ack["next"]
    append(stores.redis, "events", [event(1), event(2)])
    got = receive(ws, timeout=2)
    assert got["id"] == "c" and [r["id"] for r in got["rows"]] == [1, 2]
    assert got["next"]
    drain(stores, "events")
    append(stores.redis, "events", [event(3)])
    seen = []
    while 3 not in seen:
        seen += [r["id"] for r in receive(ws, timeout=2)["rows"]]
    assert seen == [3]


def test_page_pushes_its_queries_together(stores, connect, client, auth):
    save_query(
        stores,
        {
            "name": "biggest",
            "sql": "SELECT max(v) AS top FROM events WHERE id >= :first_id",
            "params": [{"name": "first_id", "type": "bigint"}],
        },
    )
    body = {
        "name": "line1",
        "queries": ["totals", "biggest"],
        "inputs": [
            {"name": "min_v", "type": "double precision"},
            {"name": "first_id", "type": "bigint"},
        ],
    }
    bad = client.post("/api/pages", json={**body, "inputs": []}, headers=auth("analyst"))
    assert bad.status_code == 400
    assert len(bad.get_json()["error"]["details"]["problems"]) == 2
    assert client.post("/api/pages", json=body, headers=auth("analyst")).status_code == 201
    assert client.get("/api/pages/line1", headers=auth("read")).get_json() == body
    ws = connect()
    send(ws, op="subscribe", id="p", page="line1", params={"min_v": 0, "first_id": 2})
    first = receive(ws)
    assert first["page"] == "line1"
    assert first["results"]["totals"]["rows"] == [{"n": 0, "total": None}]
    assert first["results"]["biggest"]["rows"] == [{"top": None}]
    append(stores.redis, "events", [event(1, 4.0), event(2, 3.0)])
    update = receive(ws, timeout=2)
    assert update["results"]["totals"]["rows"] == [{"n": 2, "total": 7.0}]
    assert update["results"]["biggest"]["rows"] == [{"top": 3.0}]


def test_a_slow_consumer_does_not_delay_the_others(stores, connect, server):
    save_query(stores, {"name": "everything", "sql": "SELECT id, v, t FROM events ORDER BY id"})
    append(stores.redis, "events", [event(i) for i in range(3000)])
    slow = connect(sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    send(slow, op="subscribe", id="s", query="everything")  # never read again
    fast = connect()
    send(fast, op="subscribe", id="f", query="totals", params={"min_v": 0})
    assert receive(fast)["rows"][0]["n"] == 3000
    for i in range(10):  # each change pushes ~150 KB to the slow client
        start = time.monotonic()
        append(stores.redis, "events", [event(5000 + i)])
        assert receive(fast, timeout=2)["rows"][0]["n"] == 3001 + i
        assert time.monotonic() - start < 1.0


def test_refresh_interval_picks_up_changes_nobody_announced(stores, connect, server):
    spec = declare_events(stores, "quiet_events")
    save_query(
        stores,
        {"name": "quiet", "sql": "SELECT count(*) AS n FROM quiet_events", "refresh": "1s"},
    )
    ws = connect()
    send(ws, op="subscribe", id="r", query="quiet")
    assert receive(ws)["rows"] == [{"n": 0}]
    settle(server)
    before = stats(server)["groups"][0]["evaluations"]
    quiet(ws, 1.5)  # re-evaluated at the interval, but the result did not change
    assert stats(server)["groups"][0]["evaluations"] > before
    load_rows(stores.db, spec, [event(1)])  # a batch load that publishes no notification
    assert receive(ws, timeout=3)["rows"] == [{"n": 1}]


def test_unsubscribe_stops_pushes_and_frees_the_shared_result(stores, connect, server):
    ws = connect()
    send(ws, op="subscribe", id="u", query="totals", params={"min_v": 0})
    assert receive(ws)["rows"] == [{"n": 0, "total": None}]
    send(ws, op="unsubscribe", id="u")
    assert receive(ws) == {"op": "unsubscribed", "id": "u"}
    assert stats(server)["groups"] == []
    append(stores.redis, "events", [event(1, 2.0)])
    quiet(ws, 0.5)

# ruff: noqa: F811  (pytest fixtures imported from tests.serving.rest_fixtures)
"""GraphQL at /graphql with stock clients: gql over HTTP and over websockets
(graphql-transport-ws) against a real threaded server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import websocket
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.requests import RequestsHTTPTransport
from gql.transport.websockets import WebsocketsTransport

import serving.graphql
from query_router.saved import save_query
from speed.stream import append
from tests.serving.rest_fixtures import TEMPS, datasets, live_server  # noqa: F401

EVENT = {"origin": "EWR", "time_hour": "2026-05-05T10:00:00+00:00", "temp": 12.5}


def http_client(base: str, token: str) -> Client:
    transport = RequestsHTTPTransport(
        url=f"{base}/graphql", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return Client(transport=transport)


def test_saved_query_is_a_typed_field_with_typed_arguments(datasets, live_server, token):
    append(datasets.redis, "weather", [EVENT, {**EVENT, "origin": "JFK", "temp": 3.0}])
    save_query(datasets, TEMPS)
    client = http_client(live_server, token("read"))
    result = client.execute(
        GraphQLRequest(
            "query($t: Float) { temps(min_temp: $t) { rows { origin temp time_hour }"
            " freshness { plan speed_high_water } } datasets { name kind speed_backlog } }",
            variable_values={"t": 5},
        )
    )
    assert result["temps"]["rows"] == [
        {"origin": "EWR", "temp": 12.5, "time_hour": "2026-05-05T10:00:00+00:00"}
    ]
    assert result["temps"]["freshness"]["plan"] in ("speed", "merge")
    assert {d["name"]: d["speed_backlog"] for d in result["datasets"]} == {
        "levels": 0,
        "weather": 2,
    }
    # the argument is typed: a string where a Float is declared is refused by validation
    with pytest.raises(TransportQueryError, match="Float"):
        client.execute(gql('{ temps(min_temp: "warm") { rows { origin } } }'))
    # and so is a column the query does not declare
    with pytest.raises(TransportQueryError, match="Cannot query field 'pressure'"):
        client.execute(gql("{ temps { rows { pressure } } }"))


def test_schema_follows_saved_queries_and_mutations_check_roles(datasets, live_server, token):
    reader = http_client(live_server, token("read"))
    analyst = http_client(live_server, token("analyst"))
    save = GraphQLRequest(
        'mutation($sql: String!) { save_query(name: "hot", sql: $sql,'
        ' params: [{name: "above", type: "double precision"}],'
        ' outputs: [{name: "n", type: "bigint"}], refresh: "5s") { name refresh params { name type } } }',
        variable_values={"sql": "SELECT count(*) AS n FROM weather WHERE temp > :above"},
    )
    with pytest.raises(TransportQueryError, match="analyst"):
        reader.execute(save)
    with pytest.raises(TransportQueryError, match="Cannot query field 'hot'"):
        reader.execute(gql("{ hot(above: 1) { rows { n } } }"))
    saved = analyst.execute(save)["save_query"]
    assert saved == {
        "name": "hot",
        "refresh": "5s",
        "params": [{"name": "above", "type": "double precision"}],
    }
    append(datasets.redis, "weather", [EVENT])
    # the reader's next request sees the rebuilt schema: the new field, typed
    assert reader.execute(gql("{ hot(above: 1) { rows { n } } }"))["hot"]["rows"] == [{"n": 1}]
    with pytest.raises(TransportQueryError, match="above"):
        reader.execute(gql("{ hot { rows { n } } }"))  # required: declared without a default
    analyst.execute(gql('mutation { delete_query(name: "hot") }'))
    with pytest.raises(TransportQueryError, match="Cannot query field 'hot'"):
        reader.execute(gql("{ hot(above: 1) { rows { n } } }"))


def test_trigger_run_needs_admin_and_queues_a_run(datasets, live_server, token, auth):
    run = gql('mutation { trigger_run(dataset: "weather", mode: "full") { run_id } }')
    with pytest.raises(TransportQueryError, match="admin"):
        http_client(live_server, token("analyst")).execute(run)
    run_id = http_client(live_server, token("admin")).execute(run)["trigger_run"]["run_id"]
    rest = requests.get(f"{live_server}/api/runs/{run_id}", headers=auth("read"), timeout=30)
    assert rest.json()["status"] == "queued"
    assert rest.json()["mode"] == "full"
    listed = http_client(live_server, token("read")).execute(
        gql('{ runs(dataset: "weather") { id status mode } }')
    )
    assert listed["runs"] == [{"id": run_id, "status": "queued", "mode": "full"}]


def test_unknown_names_answer_with_the_cxd_error_code(datasets, live_server, token):
    r = requests.post(
        f"{live_server}/graphql",
        json={"query": '{ dataset(name: "nope") { name } }'},
        headers={"Authorization": f"Bearer {token('read')}"},
        timeout=30,
    )
    body = r.json()
    assert r.status_code == 200
    assert body["data"] == {"dataset": None}
    assert body["errors"][0]["extensions"]["code"] == "not_found"
    assert "nope" in body["errors"][0]["message"]
    assert (
        requests.post(
            f"{live_server}/graphql", json={"query": "{ datasets { name } }"}, timeout=30
        ).status_code
        == 401
    )


@pytest.fixture
def resolver_calls(monkeypatch):
    """Count calls of the datasets resolver (the only one the hostile documents reach)."""
    calls = []
    real = serving.graphql.dataset_object

    def counting(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(serving.graphql, "dataset_object", counting)
    return calls


def nested(depth: int) -> str:
    """``{ datasets { name } __schema { types { fields { type { ofType { ... } } } } } }``."""
    inner = "name"
    for _ in range(depth - 4):
        inner = f"ofType {{ {inner} }}"
    return f"{{ datasets {{ name }} __schema {{ types {{ fields {{ type {{ {inner} }} }} }} }} }}"


def test_hostile_documents_are_rejected_before_any_resolver_runs(
    datasets, live_server, token, resolver_calls
):
    headers = {"Authorization": f"Bearer {token('read')}"}

    def post(query: str) -> requests.Response:
        return requests.post(
            f"{live_server}/graphql", json={"query": query}, headers=headers, timeout=30
        )

    deep = post(nested(50))
    assert deep.status_code == 400
    assert deep.json()["errors"][0]["extensions"]["code"] == "depth_limit"
    aliases = post("{ " + " ".join(f"a{i}: datasets {{ name }}" for i in range(1000)) + " }")
    assert aliases.status_code == 400
    assert aliases.json()["errors"][0]["extensions"]["code"] == "alias_limit"
    # a fragment spread many times counts every time it is spread
    frag = (
        "fragment F on Query { " + " ".join(f"x{i}: datasets {{ name }}" for i in range(20)) + " }"
    )
    spread = post("{ " + " ".join(f"...F a{i}: __typename" for i in range(10)) + " } " + frag)
    assert spread.json()["errors"][0]["extensions"]["code"] == "alias_limit"
    # a fragment "bomb": 30 fragments each spreading the previous one twice is 2**30
    # aliases; it is measured in linear time and refused
    bomb = "fragment F0 on Query { a: datasets { name } } " + " ".join(
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 31)
    )
    started = time.monotonic()
    assert post("{ ...F30 } " + bomb).json()["errors"][0]["extensions"]["code"] == "alias_limit"
    assert time.monotonic() - started < 5
    tokens = post("{ datasets { " + "a " * 12_000 + "} }")  # 24 KB, 12,000 tokens
    assert tokens.json()["errors"][0]["extensions"]["code"] == "token_limit"
    size = post("{ datasets { name } }" + " " * 70_000)
    assert size.json()["errors"][0]["extensions"]["code"] == "size_limit"
    assert resolver_calls == []
    # an ordinary query within the limits does reach the resolver
    ok = post(nested(12))
    assert ok.status_code == 200, ok.json()
    assert resolver_calls == ["levels", "weather"]


def test_graphiql_page_is_served_from_the_package(app, live_server, token):
    page = requests.get(
        f"{live_server}/graphql?token={token('read')}", headers={"Accept": "text/html"}, timeout=30
    )
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js"):
        assert f"/graphql/static/{asset}" in page.text
        r = requests.get(f"{live_server}/graphql/static/{asset}", timeout=30)
        assert r.status_code == 200 and len(r.content) > 5_000, asset
    # a GraphQL client asking for JSON on the same URL gets GraphQL, not the page
    r = requests.get(
        f"{live_server}/graphql",
        params={"query": "{ saved_queries { name } }", "token": token("read")},
        timeout=30,
    )
    assert r.json() == {"data": {"saved_queries": []}}


# --- subscriptions ----------------------------------------------------------------------


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/graphql"


@contextlib.contextmanager
def subscription(base: str, token: str, request: GraphQLRequest) -> Iterator[queue.Queue]:
    """A gql websocket subscription running in a thread; its results arrive on the queue."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    async def consume():
        transport = WebsocketsTransport(
            url=ws_url(base),
            init_payload={"Authorization": f"Bearer {token}"},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        async with Client(transport=transport) as session:

            async def pump():
                async for result in session.subscribe(request):
                    results.put(result)

            task = asyncio.create_task(pump())
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def run():
        try:
            asyncio.run(consume())
        except Exception as exc:  # surfaced to the test through the queue
            results.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield results
    finally:
        stop.set()
        thread.join(15)


def next_result(results: queue.Queue, timeout: float = 15) -> dict:
    item = results.get(timeout=timeout)
    if isinstance(item, Exception):
        raise item
    return item


def test_saved_query_subscription_pushes_only_changed_results(datasets, live_server, token):
    save_query(datasets, TEMPS)
    request = gql("subscription { temps(min_temp: 10) { rows { origin temp } } }")
    with subscription(live_server, token("read"), request) as results:
        assert next_result(results) == {"temps": {"rows": []}}
        time.sleep(0.5)  # the subscription is listening
        started = time.monotonic()
        append(datasets.redis, "weather", [EVENT])
        assert next_result(results) == {"temps": {"rows": [{"origin": "EWR", "temp": 12.5}]}}
        assert time.monotonic() - started < 5  # pushed on the notification, not the 30 s refresh
        # an event the query filters out changes nothing, so nothing is pushed
        append(datasets.redis, "weather", [{**EVENT, "origin": "JFK", "temp": 1.0}])
        with pytest.raises(queue.Empty):
            next_result(results, timeout=1.5)
        append(datasets.redis, "weather", [{**EVENT, "origin": "LGA", "temp": 20.0}])
        assert [r["origin"] for r in next_result(results)["temps"]["rows"]] == ["EWR", "LGA"]


def test_dataset_changes_subscription_carries_new_events(datasets, live_server, token):
    request = gql(
        'subscription { dataset_changes(dataset: "weather") { dataset speed_backlog'
        " events { id data } } }"
    )
    with subscription(live_server, token("read"), request) as results:
        first = next_result(results)["dataset_changes"]
        assert first == {"dataset": "weather", "speed_backlog": 0, "events": []}
        time.sleep(0.5)
        ids = append(datasets.redis, "weather", [EVENT, {**EVENT, "origin": "JFK"}])
        change = next_result(results)["dataset_changes"]
        assert [e["id"] for e in change["events"]] == ids
        assert change["events"][1]["data"]["origin"] == "JFK"
        assert change["speed_backlog"] == 2


def test_refresh_interval_pushes_without_a_notification(datasets, live_server, token):
    save_query(datasets, {**TEMPS, "name": "every", "refresh": "1s"})
    request = gql("subscription { every { rows { origin } } }")
    with subscription(live_server, token("read"), request) as results:
        assert next_result(results) == {"every": {"rows": []}}
        # written behind the notification channel's back (no PUBLISH): the refresh
        # interval still finds it
        datasets.redis.xadd("cxd:{weather}:log", {"d": json.dumps(EVENT)})
        assert next_result(results, timeout=10) == {"every": {"rows": [{"origin": "EWR"}]}}


def test_websocket_protocol_rules(app, datasets, live_server, token):
    """Raw graphql-transport-ws: auth at connection_init, ping/pong, errors, close codes."""
    # another blueprint replacing flask-sock's options does not withdraw the subprotocol
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}
    url = ws_url(live_server)
    bad = websocket.create_connection(url, subprotocols=["graphql-transport-ws"], timeout=10)
    assert bad.getsubprotocol() == "graphql-transport-ws"
    bad.send(json.dumps({"type": "connection_init", "payload": {"token": "nope"}}))
    assert close_code(bad) == 4403
    ws = websocket.create_connection(
        url + f"?token={token('read')}", subprotocols=["graphql-transport-ws"], timeout=10
    )
    ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(ws.recv()) == {"type": "connection_ack"}
    ws.send(json.dumps({"type": "ping"}))
    assert json.loads(ws.recv()) == {"type": "pong"}
    ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": nested(50)}}))
    error = json.loads(ws.recv())
    assert error["type"] == "error" and error["id"] == "1"
    assert error["payload"][0]["extensions"]["code"] == "depth_limit"
    ws.send(
        json.dumps(
            {"type": "subscribe", "id": "2", "payload": {"query": "{ saved_queries { name } }"}}
        )
    )
    assert json.loads(ws.recv()) == {
        "id": "2",
        "type": "next",
        "payload": {"data": {"saved_queries": []}},
    }
    assert json.loads(ws.recv()) == {"id": "2", "type": "complete"}
    # subscriptions per connection are capped; completing one frees its place
    app.config["CXD_GRAPHQL_MAX_SUBSCRIPTIONS"] = 1
    sub = {"query": 'subscription { dataset_changes(dataset: "weather") { dataset } }'}
    ws.send(json.dumps({"type": "subscribe", "id": "3", "payload": sub}))
    assert json.loads(ws.recv())["payload"] == {"data": {"dataset_changes": {"dataset": "weather"}}}
    ws.send(json.dumps({"type": "subscribe", "id": "4", "payload": sub}))
    refused = json.loads(ws.recv())
    assert refused["id"] == "4" and refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "subscription_limit"
    ws.send(json.dumps({"type": "complete", "id": "3"}))
    ws.send(json.dumps({"type": "subscribe", "id": "5", "payload": sub}))
    assert json.loads(ws.recv())["id"] == "5"
    ws.send(json.dumps({"type": "connection_init"}))
    assert close_code(ws) == 4429


def close_code(ws: websocket.WebSocket) -> int:
    """Read frames up to the server's close frame and return its code."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return int.from_bytes(data[:2], "big")


@pytest.mark.browser
@pytest.mark.skipif(not shutil.which("chromium"), reason="headless Chromium is not installed")
def test_graphiql_runs_in_a_browser_and_loads_the_schema(app, live_server, token, tmp_path):
    dom = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
            "--virtual-time-budget=8000", "--dump-dom", f"{live_server}/graphql?token={token('read')}",
        ],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "graphiql-container" in dom  # React rendered the IDE from the packaged assets
    # and the page introspected the schema with the token from its URL
    counted = app.extensions["cxd.metrics"].count
    assert counted[("/graphql", "POST", "200")] >= 1

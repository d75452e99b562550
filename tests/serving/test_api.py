# ruff: noqa: F811  (pytest fixtures imported from tests.serving.rest_fixtures)
"""REST with plain ``requests`` against a real threaded server: datasets, latest values,
saved queries (create, replace, delete, results, plan), ad-hoc SQL, errors and /metrics."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import requests
import websocket

from batch.jobs import enqueue_run
from speed.stream import append
from tests.serving.rest_fixtures import TEMPS, datasets, live_server  # noqa: F401


class Api(requests.Session):
    """A requests session against the live server with a bearer token."""

    def __init__(self, base: str, token: str):
        super().__init__()
        self.base = base
        self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", 30)
        return super().request(method, self.base + url if url.startswith("/") else url, **kwargs)


@pytest.fixture
def api(live_server, token):
    """``api(role)``: a session on the live server with a token of ``role``."""
    opened: list[Api] = []

    def make(role: str = "admin") -> Api:
        opened.append(Api(live_server, token(role)))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_datasets_describe_schema_kind_and_speed_backlog(datasets, api):
    append(
        datasets.redis,
        "weather",
        [{"origin": "EWR", "time_hour": "2026-05-05T10:00:00Z", "temp": 1.0}],
    )
    reader = api("read")
    listed = reader.get("/api/datasets").json()
    assert [d["name"] for d in listed] == ["levels", "weather"]
    weather = reader.get("/api/datasets/weather").json()
    assert weather["kind"] == "time_series"
    assert weather["columns"][1] == {"name": "time_hour", "type": "timestamptz"}
    assert weather["time_column"] == "time_hour"
    assert weather["speed_backlog"] == 1
    assert weather["watermark"]["stream_id"] == "0-0"
    assert weather["speed_high_water"] != "0-0"
    missing = reader.get("/api/datasets/nope")
    assert missing.status_code == 404
    assert "nope" in error_of(missing)["message"]


def test_latest_gives_the_newest_value_of_every_entity(datasets, api):
    append(
        datasets.redis,
        "levels",
        [{"gauge": "g2", "level": 1.0}, {"gauge": "g1", "level": 3.0}],
        key_columns=["gauge"],
    )
    append(datasets.redis, "levels", [{"gauge": "g2", "level": 1.5}], key_columns=["gauge"])
    body = api("read").get("/api/datasets/levels/latest").json()
    assert body["rows"] == [{"gauge": "g1", "level": 3.0}, {"gauge": "g2", "level": 1.5}]
    assert body["key"] == ["gauge"]
    assert body["freshness"]["plan"] == "speed"
    assert (
        body["freshness"]["speed_high_water"]
        == datasets.redis.xinfo_stream("cxd:{levels}:log")["last-generated-id"].decode()
    )
    assert api("read").get("/api/datasets/nope/latest").status_code == 404


def test_saved_query_lifecycle(datasets, api):
    analyst, reader = api("analyst"), api("read")
    append(
        datasets.redis,
        "weather",
        [
            {"origin": "EWR", "time_hour": "2026-05-05T10:00:00Z", "temp": 12.5},
            {"origin": "JFK", "time_hour": "2026-05-05T10:00:00Z", "temp": 3.0},
        ],
    )
    assert reader.post("/api/queries", json=TEMPS).status_code == 403
    created = analyst.post("/api/queries", json=TEMPS)
    assert created.status_code == 201, created.json()
    assert [q["name"] for q in reader.get("/api/queries").json()] == ["temps"]
    assert reader.get("/api/queries/temps").json()["refresh"] == "30s"

    result = reader.get("/api/queries/temps/results", params={"min_temp": 5}).json()
    assert [r["origin"] for r in result["rows"]] == ["EWR"]
    assert [c["name"] for c in result["columns"]] == ["origin", "temp", "time_hour"]
    assert set(result["freshness"]) >= {"batch_watermark", "speed_high_water", "plan"}
    assert len(reader.get("/api/queries/temps/results").json()["rows"]) == 2  # the default, 0
    bad = reader.get("/api/queries/temps/results", params={"min_temp": "warm"})
    assert bad.status_code == 400
    assert "min_temp" in error_of(bad)["message"]
    plan = reader.get("/api/queries/temps/plan").json()
    assert plan["plan"] in ("speed", "merge")

    # PUT replaces the query under its name
    replaced = analyst.put(
        "/api/queries/temps",
        json={**TEMPS, "sql": "SELECT origin, temp, time_hour FROM weather WHERE temp < :min_temp"},
    )
    assert replaced.status_code == 200, replaced.json()
    result = reader.get("/api/queries/temps/results", params={"min_temp": 5}).json()
    assert [r["origin"] for r in result["rows"]] == ["JFK"]
    assert analyst.put("/api/queries/temps", json={**TEMPS, "name": "other"}).status_code == 400
    unnamed = {k: v for k, v in TEMPS.items() if k != "name"}
    assert analyst.put("/api/queries/nope", json=unnamed).status_code == 404
    invalid = analyst.put("/api/queries/temps", json={**TEMPS, "sql": "DELETE FROM weather"})
    assert invalid.status_code == 400
    assert reader.get("/api/queries/temps").json()["sql"].endswith("< :min_temp")  # unchanged

    assert reader.delete("/api/queries/temps").status_code == 403
    assert analyst.delete("/api/queries/temps").status_code == 204
    assert reader.get("/api/queries/temps").status_code == 404
    assert reader.get("/api/queries/temps/results").status_code == 404
    assert analyst.delete("/api/queries/temps").status_code == 404


def test_adhoc_sql_is_read_only_and_for_analysts(datasets, api):
    append(
        datasets.redis,
        "weather",
        [{"origin": "EWR", "time_hour": "2026-05-05T10:00:00Z", "temp": 1.0}],
    )
    body = {"sql": "SELECT count(*) AS n FROM weather WHERE temp >= :t", "params": {"t": 0}}
    assert api("read").post("/api/sql", json=body).status_code == 403
    assert api("analyst").post("/api/sql", json=body).json()["rows"] == [{"n": 1}]
    for sql in ("DROP TABLE weather", "INSERT INTO weather (origin) VALUES ('x')"):
        r = api("analyst").post("/api/sql", json={"sql": sql})
        assert r.status_code == 400, sql
        assert error_of(r)["code"] == "bad_query"
    not_json = api("analyst").post("/api/sql", data="SELECT 1")
    assert not_json.status_code == 400
    assert error_of(not_json)["code"] == "bad_input"


def test_errors_share_one_shape(datasets, api):
    assert error_of(api().get("/api/no/such/route"))["code"] == "not_found"
    assert error_of(api().delete("/api/datasets"))["code"] == "method_not_allowed"
    unauth = requests.get(api().get("/api/health").url, timeout=30)
    assert unauth.status_code == 401
    assert error_of(unauth)["code"] == "unauthorized"


def test_metrics_count_requests_runs_and_backlog(datasets, api):
    append(
        datasets.redis,
        "weather",
        [{"origin": "EWR", "time_hour": "2026-05-05T10:00:00Z", "temp": 1.0}] * 3,
    )
    enqueue_run(datasets, "weather")
    reader = api("read")
    for _ in range(3):
        reader.get("/api/datasets/weather")
    reader.get("/api/datasets/nope")
    assert requests.get(reader.get("/metrics").url, timeout=30).status_code == 401
    text = reader.get("/metrics")
    assert text.headers["Content-Type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert (
        'cxd_http_requests_total{route="/api/datasets/<name>",method="GET",status="200"} 3' in lines
    )
    assert (
        'cxd_http_requests_total{route="/api/datasets/<name>",method="GET",status="404"} 1' in lines
    )
    count = next(
        line
        for line in lines
        if line.startswith('cxd_http_request_duration_seconds_count{route="/api/datasets/<name>"')
    )
    assert count.endswith(" 4")
    inf = next(
        line for line in lines if 'route="/api/datasets/<name>",method="GET",le="+Inf"' in line
    )
    assert inf.endswith(" 4")
    assert 'cxd_runs{status="queued"} 1' in lines
    assert 'cxd_runs{status="failed"} 0' in lines
    assert 'cxd_speed_backlog{dataset="weather"} 3' in lines
    assert 'cxd_speed_backlog{dataset="levels"} 0' in lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_server_holds_many_websockets_and_still_answers(stores, settings, token):
    """cxd-server under gunicorn (gthread) keeps 200 GraphQL websockets open at once and
    still answers REST while they are held."""
    port = _free_port()
    env = {**os.environ, "CXD_PORT": str(port), "CXD_WEB_THREADS": "300"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxd.server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    read = token("read")
    sockets: list[websocket.WebSocket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(
                    f"{base}/api/health", headers={"Authorization": f"Bearer {read}"}, timeout=5
                )
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "cxd-server did not start"
                time.sleep(0.2)
        for _ in range(200):
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}/graphql?token={read}",
                subprotocols=["graphql-transport-ws"],
                timeout=30,
            )
            sockets.append(ws)
            ws.send(json.dumps({"type": "connection_init"}))
        for ws in sockets:
            assert json.loads(ws.recv()) == {"type": "connection_ack"}
        health = requests.get(
            f"{base}/api/health", headers={"Authorization": f"Bearer {read}"}, timeout=30
        )
        assert health.json() == {"status": "ok"}
        metrics = requests.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {read}"}, timeout=30
        )
        assert re.search(
            r'cxd_http_requests_total\{route="/api/health",method="GET",status="200"\} \d',
            metrics.text,
        )
    finally:
        for ws in sockets:
            ws.close()
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()

"""Secrets are write-only: a password declared with a source of every type appears in no
API response, no log line (at DEBUG), no log file and no run record."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest

from batch.jobs import enqueue_run
from cxd.catalog import get_source
from plugins.mqtt import Subscribers
from tests.plugins.brokers import broker, eventually  # noqa: F401

PASSWORD = "Pa55-w0rd-9f3c1e7a"
COLUMNS = [
    {"name": "sensor", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "level", "type": "double precision"},
]
PLUGIN = textwrap.dedent(
    """
    from plugins.base import Payload, SourcePlugin

    class Meter(SourcePlugin):
        def fetch(self, cursor):
            yield Payload(content=b"a,2026-05-05T10:00:00Z,1.5")

        def ingest(self, payload):
            sensor, at, level = payload.content.decode().split(",")
            return [{"sensor": sensor, "at": at, "level": float(level)}]
    """
)


def declarations(tmp_path, mqtt_port):
    base = {"kind": "time_series", "columns": COLUMNS, "key": ["sensor", "at"], "time_column": "at"}
    return [
        {
            **base,
            "name": "erp",
            "type": "odbc",
            "options": {
                "dsn": "cxd_test_dsn",
                "query": "SELECT sensor, at, level FROM readings WHERE at > ?",
                "cursor_column": "at",
                "initial_cursor": "2026-01-01T00:00:00Z",
                "username": "reader",
                "password": PASSWORD,  # an option named like a secret becomes a secret
            },
        },
        {
            **base,
            "name": "portal",
            "type": "http",
            "options": {"url": "http://127.0.0.1:9/readings.json", "format": "json"},
            "secrets": {"password": PASSWORD, "api_key": PASSWORD},
        },
        {**base, "name": "hook", "type": "webhook", "secrets": {"token": PASSWORD}},
        {
            **base,
            "name": "drop",
            "type": "file",
            "options": {"path": f"{tmp_path}/drop/*.csv", "format": "csv"},
            "secrets": {"password": PASSWORD},
        },
        {
            **base,
            "name": "plant",
            "type": "mqtt",
            "options": {"port": mqtt_port, "topics": ["plant/#"], "username": "cxd"},
            "secrets": {"password": PASSWORD},
        },
        {
            **base,
            "name": "meter",
            "type": "python",
            "plugin": "meter",
            "secrets": {"password": PASSWORD},
        },
    ]


@pytest.fixture
def fresh_worker_stores():
    """rq jobs run here use this process's cached stores; close them after the test, since
    the next test's clean-up terminates their Postgres connections."""
    from cxd import stores as stores_module

    yield
    for opened in stores_module._process_stores.values():
        opened.close()
    stores_module._process_stores.clear()


def log_files(*homes):
    for home in homes:
        for path in home.rglob("*"):
            if path.is_file() and (path.suffix == ".log" or path.parent.name in ("log", "logs")):
                yield path


@pytest.mark.mqtt
@pytest.mark.usefixtures("fresh_worker_stores")
def test_a_password_appears_nowhere(
    stores,
    settings,
    client,
    ingest_client,
    auth,
    run_jobs,
    tmp_path,
    caplog,
    session_home,
    broker,  # noqa: F811
):
    caplog.set_level(logging.DEBUG)
    settings.plugin_dir.mkdir()
    (settings.plugin_dir / "meter.py").write_text(PLUGIN)
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "one.csv").write_text("sensor,at,level\na,2026-05-05T10:00:00Z,1\n")
    responses = []

    def call(method, path, **kwargs):
        r = getattr(client, method)(path, headers=auth(), **kwargs)
        responses.append(r.get_data(as_text=True))
        return r

    for declared in declarations(tmp_path, broker.port):
        r = call("post", "/api/sources", json=declared)
        assert r.status_code == 201, r.get_json()
        assert call("post", "/api/sources", json=declared).status_code == 409
        bad = {**declared, "kind": "weekly", "columns": [{"name": "x", "type": "blob"}]}
        assert call("post", "/api/sources", json=bad).status_code == 400
        assert call("get", f"/api/sources/{declared['name']}").status_code == 200
        changed = {**declared, "description": "changed"}
        assert call("put", f"/api/sources/{declared['name']}", json=changed).status_code == 200
        stored = get_source(stores.db, declared["name"]).secrets
        assert PASSWORD in stored.values(), declared["name"]  # kept, only never shown
    assert call("get", "/api/sources").status_code == 200

    # runs: a file source and a python plugin, and a webhook post with the source's token
    for name in ("drop", "meter"):
        run_id = enqueue_run(stores, name)
        run_jobs()
        run = call("get", f"/api/runs/{run_id}").get_json()
        assert run["status"] == "succeeded", run
    hook = ingest_client.post(
        "/hooks/hook",
        json={"sensor": "a", "at": "2026-05-05T10:00:00Z", "level": 1},
        headers={"Authorization": f"Bearer {PASSWORD}"},
    )
    assert hook.status_code == 202
    responses.append(hook.get_data(as_text=True))
    wrong = ingest_client.post("/hooks/hook", json={}, headers={"Authorization": "Bearer x"})
    responses.append(wrong.get_data(as_text=True))
    # the MQTT subscriber logs in with the password
    subs = Subscribers(stores)
    try:
        from cxd.catalog import list_sources

        subs.sync(list_sources(stores.db))
        eventually(lambda: subs.running["plant"][1].connected, what="mqtt connected")
    finally:
        subs.stop_all()
    assert call("get", "/api/sources/plant").get_json()["health"]["plugin"] == "mqtt"
    assert call("get", "/api/runs").status_code == 200

    assert len(responses) > 30
    for text in responses:
        assert PASSWORD not in text
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert PASSWORD not in caplog.text
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
    for row in stores.db.fetchall("SELECT * FROM cxd.runs"):
        assert PASSWORD not in json.dumps(row, default=str)
    for path in log_files(settings.home, session_home):
        assert PASSWORD not in path.read_text(errors="replace"), path
    for key in stores.redis.scan_iter(count=1000):
        kind = stores.redis.type(key)
        if kind == b"string":
            assert PASSWORD.encode() not in stores.redis.get(key), key
        elif kind == b"hash":
            assert PASSWORD.encode() not in b"".join(
                k + v for k, v in stores.redis.hgetall(key).items()
            ), key

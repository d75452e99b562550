"""Fixtures of the serving tests: a real threaded WSGI server (websockets included) on a
free port, and a small pair of datasets with a saved query."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from tests.helpers import declare_source

WEATHER = {
    "name": "weather",
    "type": "webhook",
    "kind": "time_series",
    "columns": [
        {"name": "origin", "type": "text"},
        {"name": "time_hour", "type": "timestamptz"},
        {"name": "temp", "type": "double precision"},
    ],
    "key": ["origin", "time_hour"],
    "time_column": "time_hour",
}
LEVELS = {
    "name": "levels",
    "type": "webhook",
    "kind": "instantaneous",
    "columns": [{"name": "gauge", "type": "text"}, {"name": "level", "type": "double precision"}],
    "key": ["gauge"],
}
TEMPS = {
    "name": "temps",
    "sql": "SELECT origin, temp, time_hour FROM weather WHERE temp > :min_temp ORDER BY origin, time_hour",
    "params": [{"name": "min_temp", "type": "double precision", "default": 0}],
    "outputs": [
        {"name": "origin", "type": "text"},
        {"name": "temp", "type": "double precision"},
        {"name": "time_hour", "type": "timestamptz"},
    ],
    "refresh": "30s",
}


@pytest.fixture
def datasets(stores):
    """Declare the weather (time series) and levels (instantaneous) webhook datasets."""
    for body in (WEATHER, LEVELS):
        declare_source(stores, body)
    return stores


@pytest.fixture
def live_server(app):
    """The app served by werkzeug's threaded server on a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)

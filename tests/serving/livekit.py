"""Helpers for the live serving tests (changes, websockets): a declared event dataset
and a real threaded HTTP server on a free port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import make_server

from cxd.catalog import SourceSpec
from tests.helpers import declare_source

EVENTS = {
    "name": "events",
    "type": "webhook",
    "kind": "time_series",
    "columns": [
        {"name": "id", "type": "bigint"},
        {"name": "t", "type": "timestamptz"},
        {"name": "v", "type": "double precision"},
    ],
    "key": ["id", "t"],
    "time_column": "t",
}


def declare_events(stores, name: str = "events") -> SourceSpec:
    """Declare (and create the tables of) a time-series dataset of numbered events."""
    return declare_source(stores, {**EVENTS, "name": name})


def event(i: int, v: float = 1.0) -> dict:
    """Event number ``i``."""
    return {"id": i, "t": f"2026-05-05T10:{i // 60 % 60:02d}:{i % 60:02d}Z", "v": v}


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with a threaded werkzeug server on a free port; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()

"""Fixtures and helpers of the pull-source tests (imported by the test modules, so they
stay out of the shared conftest): real source databases, declared sources, runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg2
import pytest

from batch.jobs import execute_run
from batch.runs import create_run
from cxd.catalog import parse_source, save_source
from plugins.odbc import installed_driver, postgres_connection_string


@pytest.fixture
def pg_source(store_urls):
    """A fresh Postgres database to be a source: ``(psycopg2 connection, ODBC string, url)``."""
    driver = installed_driver("postgres")
    if driver is None:
        pytest.fail("psqlODBC is not installed: run scripts/system-deps.sh (odbc-postgresql)")
    db_url, _ = store_urls
    name = f"cxd_src_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(db_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    src_url = urlparse(db_url)._replace(path="/" + name).geturl()
    conn = psycopg2.connect(src_url)
    conn.autocommit = True
    yield conn, postgres_connection_string(src_url, driver), src_url
    conn.close()
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


def declare(stores, body: dict[str, Any]):
    """Store a source declared like one ``cxd.yml`` entry; return its spec."""
    spec = parse_source(body)
    save_source(stores.db, spec)
    return spec


def run(stores, dataset: str, mode: str = "incremental") -> dict[str, Any]:
    """Run ``dataset`` now in this process, as ``cxd run`` does; return the run record."""
    return execute_run(stores, create_run(stores.db, dataset, mode))


def raw_rows(stores, dataset: str, order: str) -> list[dict[str, Any]]:
    """Every current raw row of ``dataset`` (declared columns only), ordered by ``order``.

    For point-in-time datasets that is the current version of each entity.
    """
    spec = stores.db.fetchone("SELECT columns, kind FROM cxd.datasets WHERE name = %s", (dataset,))
    cols = ", ".join(f'"{c["name"]}"' for c in spec["columns"])
    exists = stores.db.fetchone("SELECT to_regclass(%s) AS t", (f'raw."{dataset}"',))
    if exists["t"] is None:
        return []
    current = " WHERE _valid_to IS NULL" if spec["kind"] == "point_in_time" else ""
    return stores.db.fetchall(f'SELECT {cols} FROM raw."{dataset}"{current} ORDER BY {order}')


class DocServer:
    """A real HTTP server on a free local port serving routes the test sets.

    ``routes[path] = handler``; a handler takes the request (``{"path", "query",
    "headers"}``) and returns ``(status, headers, body)``. Every request is kept in
    ``requests`` with the time it arrived.
    """

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                req = {
                    "path": parts.path,
                    "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                    "headers": dict(self.headers),
                    "at": time.monotonic(),
                }
                server.requests.append(req)
                handler = server.routes.get(parts.path)
                if handler is None:
                    status, headers, body = 404, {}, b"not found"
                else:
                    status, headers, body = handler(req)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.routes: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket (later requests are refused)."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def doc_server():
    """A :class:`DocServer` for one test."""
    server = DocServer()
    yield server
    server.stop()


def process_env(settings, **extra: str) -> dict[str, str]:
    """The environment of a cxd process (cxd-ingest, a worker) on the test's stores."""
    return {
        **os.environ,
        "CXD_DATABASE_URL": settings.database_url,
        "CXD_REDIS_URL": settings.redis_url,
        "CXD_HOME": str(settings.home),
        "CXD_CONFIG": str(settings.config_file),
        "CXD_PLUGIN_DIR": str(settings.plugin_dir),
        **extra,
    }


def stop_process(proc) -> None:
    """SIGTERM a process the test started; SIGKILL it if it is not gone in 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""Fixtures for the console: a seeded source, a logged-in test client, a real server in a
thread, and headless Chromium driven by Playwright."""

from __future__ import annotations

import re
import threading

import pytest
import yaml
from werkzeug.serving import make_server

from cxd.bootstrap import sync_config

SECRET = "hunter2-very-secret-pw"


def csrf_of(html: str) -> str:
    """The CSRF token in a console page."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def csv_source(name: str, path: str, **extra) -> dict:
    """A file source of (origin, time_hour, temp) rows, as a cxd.yml entry."""
    return {
        "name": name,
        "type": "file",
        "kind": "time_series",
        "options": {"path": path, "format": "csv"},
        "columns": [
            {"name": "origin", "type": "text"},
            {"name": "time_hour", "type": "timestamptz"},
            {"name": "temp", "type": "double precision"},
        ],
        "time_column": "time_hour",
        **extra,
    }


def declare(settings, *sources: dict) -> list:
    """Add ``sources`` to the test's cxd.yml and sync them; return every declared spec."""
    path = settings.config_file
    doc = yaml.safe_load(path.read_text()) if path.exists() else {"sources": []}
    doc["sources"] += list(sources)
    path.write_text(yaml.safe_dump(doc))
    return sync_config(settings)


@pytest.fixture
def weather(settings, stores, tmp_path):
    """Declare the CSV source ``weather``: 12 rows, a secret option, a 30-minute schedule."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "day1.csv").write_text(
        "origin,time_hour,temp\n"
        + "".join(
            f"{o},2026-05-05T{h:02d}:00:00Z,{t}\n"
            for h in range(6)
            for o, t in (("EWR", 10 + h), ("JFK", 20 - h * 1.5))
        )
    )
    source = csv_source(
        "weather", f"{folder}/*.csv", key=["origin", "time_hour"], schedule={"every": "30m"}
    )
    source["options"]["password"] = SECRET
    return declare(settings, source)


@pytest.fixture
def admin_token(token):
    return token("admin")


@pytest.fixture
def admin_client(app, admin_token):
    """A test client logged in to the console."""
    client = app.test_client()
    response = client.post("/admin/login", data={"token": admin_token})
    assert response.status_code == 302, response.data
    return client


@pytest.fixture
def server(app):
    """The app served over HTTP by werkzeug in a thread; yields its base URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def logged_in(page, server, admin_token):
    """The browser page, logged in to the console through the login form."""
    page.goto(f"{server}/admin/")
    page.fill("input[name=token]", admin_token)
    page.click("button[type=submit]")
    page.wait_for_selector("table#overview")
    return page


@pytest.fixture(autouse=True)
def fresh_worker_stores():
    """Forget the in-process worker's cached stores: the harness's reset between tests
    terminates their connections, and ``run_jobs`` runs jobs in this process."""
    from cxd import stores as store_module

    def forget():
        for cached in store_module._process_stores.values():
            cached.close()
        store_module._process_stores.clear()

    forget()
    yield
    forget()

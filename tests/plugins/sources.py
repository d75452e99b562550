"""Fixtures and helpers of the pull-source tests (imported by the test modules, so they
stay out of the shared conftest): real source databases, declared sources, runs."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg2
import pytest

from batch.jobs import execute_run
from batch.runs import create_run
from cxd.catalog import parse_source, save_source


def odbc_driver(word: str) -> str | None:
    """The installed unixODBC driver whose name holds ``word`` (Unicode preferred)."""
    import pyodbc

    names = [d for d in pyodbc.drivers() if word.lower() in d.lower()]
    names.sort(key=lambda d: "unicode" not in d.lower())
    return names[0] if names else None


def pg_odbc_string(db_url: str, driver: str) -> str:
    """A psqlODBC connection string for the Postgres database at ``db_url``.

    The embedded Postgres listens on a Unix socket (``?host=/dir``): psqlODBC takes the
    socket folder as its server name.
    """
    url = urlparse(db_url)
    host = parse_qs(url.query).get("host", [url.hostname or "127.0.0.1"])[0]
    return (
        f"Driver={{{driver}}};Server={host};Port={url.port or 5432};"
        f"Database={url.path.lstrip('/')};UID={url.username or 'postgres'};"
    )


@pytest.fixture
def pg_source(store_urls):
    """A fresh Postgres database to be a source: ``(psycopg2 connection, ODBC string, url)``."""
    driver = odbc_driver("postgres")
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
    yield conn, pg_odbc_string(src_url, driver), src_url
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
    """Every raw row of ``dataset`` (declared columns only), ordered by ``order``."""
    spec_cols = stores.db.fetchone("SELECT columns FROM cxd.datasets WHERE name = %s", (dataset,))
    cols = ", ".join(f'"{c["name"]}"' for c in spec_cols["columns"])
    exists = stores.db.fetchone("SELECT to_regclass(%s) AS t", (f'raw."{dataset}"',))
    if exists["t"] is None:
        return []
    return stores.db.fetchall(f'SELECT {cols} FROM raw."{dataset}" ORDER BY {order}')

"""The ODBC source's fetch + ingest (psqlODBC, chunked JSON payloads, DataFrame rows) against
two ceilings in the same run: the same rows read with bare pyodbc ``fetchmany`` through
the same driver, and with psycopg2's server-side cursor.

    .venv/bin/python bench/odbc_fetch.py [--rows N] [--chunk N]

Database: CXD_BENCH_DATABASE_URL (default: the local PostgreSQL on 127.0.0.1:5432); a
scratch database is created and dropped. Peak memory is the Python heap (tracemalloc)
while the rows stream through, for N and for N/10 rows: flat means about equal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2  # noqa: E402
import pyodbc  # noqa: E402

from bench.common import table  # noqa: E402
from cxd.catalog import parse_source  # noqa: E402
from plugins.odbc import OdbcSource  # noqa: E402

URL = os.environ.get("CXD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def source(conn_string: str, rows: int, chunk: int) -> OdbcSource:
    return OdbcSource(
        parse_source(
            {
                "name": "bench_orders",
                "type": "odbc",
                "options": {
                    "query": f"SELECT id, status, amount, updated_at FROM orders WHERE id <= {rows}"
                    " AND updated_at > ?",
                    "cursor_column": "updated_at",
                    "initial_cursor": "1970-01-01T00:00:00",
                    "chunk_size": chunk,
                },
                "secrets": {"connection_string": conn_string},
                "columns": [
                    {"name": "id", "type": "integer"},
                    {"name": "status", "type": "text"},
                    {"name": "amount", "type": "numeric"},
                    {"name": "updated_at", "type": "timestamptz"},
                ],
                "key": ["id", "updated_at"],
                "time_column": "updated_at",
            }
        )
    )


def plugin_pass(plugin: OdbcSource) -> int:
    return sum(len(plugin.ingest(p)) for p in plugin.fetch(None))


def ceiling_pass(url: str, rows: int, chunk: int) -> int:
    conn = psycopg2.connect(url)
    with conn, conn.cursor(name="bench") as cur:
        cur.itersize = chunk
        cur.execute("SELECT id, status, amount, updated_at FROM orders WHERE id <= %s", (rows,))
        n = sum(1 for _ in cur)
    conn.close()
    return n


def driver_pass(conn_string: str, rows: int, chunk: int) -> int:
    conn = pyodbc.connect(conn_string)
    cur = conn.cursor()
    cur.execute("SELECT id, status, amount, updated_at FROM orders WHERE id <= ?", rows)
    n = 0
    while batch := cur.fetchmany(chunk):
        n += len(batch)
    conn.close()
    return n


def peak(plugin: OdbcSource) -> int:
    tracemalloc.start()
    plugin_pass(plugin)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=5000)
    args = parser.parse_args()
    driver = next(d for d in pyodbc.drivers() if "postgres" in d.lower() and "unicode" in d.lower())
    name = f"cxd_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = urlparse(URL)._replace(path="/" + name).geturl()
    try:
        setup = psycopg2.connect(url)
        with setup, setup.cursor() as cur:
            cur.execute(
                "CREATE TABLE orders AS SELECT i AS id, md5(i::text) AS status,"
                " (i % 1000) * 1.25 AS amount,"
                " timestamp '2026-01-01' + i * interval '1 second' AS updated_at"
                f" FROM generate_series(1, {args.rows}) i"
            )
        setup.close()
        parsed = urlparse(url)
        conn_string = (
            f"Driver={{{driver}}};Server={parsed.hostname};Port={parsed.port or 5432};"
            f"Database={name};UID={parsed.username or 'postgres'};PWD={parsed.password or ''};"
            f"UseDeclareFetch=1;Fetch={args.chunk};"
        )
        plugin = source(conn_string, args.rows, args.chunk)
        start = time.perf_counter()
        n = plugin_pass(plugin)
        plugin_s = time.perf_counter() - start
        start = time.perf_counter()
        driver_n = driver_pass(conn_string, args.rows, args.chunk)
        driver_s = time.perf_counter() - start
        start = time.perf_counter()
        ceiling_n = ceiling_pass(url, args.rows, args.chunk)
        ceiling_s = time.perf_counter() - start
        assert n == driver_n == ceiling_n == args.rows, (n, driver_n, ceiling_n)
        small = peak(source(conn_string, args.rows // 10, args.chunk))
        big = peak(plugin)
    finally:
        cur = admin.cursor()
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
    print(
        table(
            [
                "measure",
                "rows",
                "seconds",
                "rows/s",
                "ratio to psqlODBC alone",
                "ratio to psycopg2",
            ],
            [
                ["odbc fetch + ingest (JSON chunks)", n, plugin_s, n / plugin_s]
                + [driver_s / plugin_s, ceiling_s / plugin_s],
                ["ceiling: pyodbc fetchmany alone", driver_n, driver_s, driver_n / driver_s]
                + [1.0, ceiling_s / driver_s],
                [
                    "ceiling: psycopg2 server-side cursor",
                    ceiling_n,
                    ceiling_s,
                    ceiling_n / ceiling_s,
                ]
                + [driver_s / ceiling_s, 1.0],
            ],
        )
    )
    print()
    print(
        table(
            ["rows streamed", "peak Python heap (MB)"],
            [[args.rows // 10, small / 1e6], [args.rows, big / 1e6]],
        )
    )


if __name__ == "__main__":
    main()

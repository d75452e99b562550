"""Start-up of the embedded stores versus connecting to external servers, and a round trip
through the thin path (webhook event -> saved query answer that includes it).

    .venv/bin/python bench/startup.py [--rounds N]

External servers: CXD_BENCH_DATABASE_URL / CXD_BENCH_REDIS_URL (default: the local
PostgreSQL and Redis on their standard ports, skipped when not reachable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2  # noqa: E402
import redis  # noqa: E402

from bench.common import median, percentile, table, timed  # noqa: E402
from cxd import embedded  # noqa: E402


def embedded_figures(rounds: int) -> list[list[object]]:
    """Cold (initdb) and warm start of embedded Postgres and Redis, in seconds."""
    cold_pg, warm_pg, cold_rd, warm_rd = [], [], [], []
    for _ in range(rounds):
        home = Path(tempfile.mkdtemp(prefix="cxdb-", dir="/tmp"))
        try:
            cold_pg.append(
                timed(lambda h=home: psycopg2.connect(embedded.start_postgres(h)).close())
            )
            cold_rd.append(
                timed(lambda h=home: redis.Redis.from_url(embedded.start_redis(h)).ping())
            )
            embedded.stop_postgres(home)
            embedded.stop_redis(home)
            warm_pg.append(
                timed(lambda h=home: psycopg2.connect(embedded.start_postgres(h)).close())
            )
            warm_rd.append(
                timed(lambda h=home: redis.Redis.from_url(embedded.start_redis(h)).ping())
            )
            embedded.stop_postgres(home)
            embedded.stop_redis(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return [
        ["embedded Postgres, first start (initdb)", median(cold_pg)],
        ["embedded Postgres, later start", median(warm_pg)],
        ["embedded Redis, first start", median(cold_rd)],
        ["embedded Redis, later start", median(warm_rd)],
    ]


def external_figures(rounds: int) -> list[list[object]]:
    """Connecting to already running servers, in seconds (the floor for start-up)."""
    rows = []
    pg_url = os.environ.get(
        "CXD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    rd_url = os.environ.get("CXD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        rows.append(
            [
                "external Postgres, connect",
                median([timed(lambda: psycopg2.connect(pg_url).close()) for _ in range(rounds)]),
            ]
        )
    except psycopg2.OperationalError:
        rows.append(["external Postgres, connect", "not reachable"])
    try:
        rows.append(
            [
                "external Redis, connect",
                median([timed(lambda: redis.Redis.from_url(rd_url).ping()) for _ in range(rounds)]),
            ]
        )
    except redis.RedisError:
        rows.append(["external Redis, connect", "not reachable"])
    return rows


def round_trip(samples: int) -> list[list[object]]:
    """Webhook POST -> saved query answer containing the event, in-process apps on embedded stores."""
    from batch.tables import register_dataset
    from cxd.auth import create_token
    from cxd.catalog import parse_source, save_source
    from cxd.config import Settings
    from cxd.ingest import create_ingest_app
    from cxd.migrations import migrate
    from cxd.stores import open_stores
    from query_router.saved import save_query
    from serving import create_app

    home = Path(tempfile.mkdtemp(prefix="cxdb-", dir="/tmp"))
    try:
        stores = open_stores(Settings(home=home))
        migrate(stores.db)
        spec = parse_source(
            {"name": "events", "type": "webhook", "columns": [{"name": "id", "type": "bigint"},
             {"name": "at", "type": "timestamptz"}], "key": ["id"], "time_column": "at"}
        )  # fmt: skip
        save_source(stores.db, spec)
        register_dataset(stores.db, spec)
        save_query(stores, {"name": "last_event", "sql": "SELECT max(id) AS id FROM events"})
        headers = {"Authorization": f"Bearer {create_token(stores.db, 'admin')}"}
        hooks = create_ingest_app({"CXD_STORES": stores}).test_client()
        api = create_app({"CXD_STORES": stores}).test_client()
        times = []
        for i in range(samples):
            start = time.perf_counter()
            hooks.post(
                "/hooks/events", json={"id": i, "at": "2026-01-01T00:00:00Z"}, headers=headers
            )
            rows = api.get("/api/queries/last_event/results", headers=headers).get_json()["rows"]
            times.append(time.perf_counter() - start)
            assert rows == [{"id": i}], rows
        stores.close()
        return [
            ["thin path round trip p50 (POST event -> query sees it)", percentile(times, 50)],
            ["thin path round trip p99", percentile(times, 99)],
        ]
    finally:
        embedded.stop_postgres(home)
        embedded.stop_redis(home)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    rows = (
        embedded_figures(args.rounds) + external_figures(args.rounds * 5) + round_trip(args.samples)
    )
    print("## Start-up and thin-path round trip\n")
    print(table(["what", "seconds"], rows))


if __name__ == "__main__":
    main()

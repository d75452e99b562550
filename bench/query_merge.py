"""Router latency on dashboard queries: raw rows in Postgres plus live rows in Redis,
answered through the router (exact merge), against the same SQL on one Postgres table
holding all rows (the ceiling). Also: a cached repeat of a saved query, and the latest
value of an instantaneous dataset (answered from Redis without Postgres).

    .venv/bin/python bench/query_merge.py                      # 1,000,000 raw + 50,000 live
    .venv/bin/python bench/query_merge.py --raw 100000 --speed 5000 --repeats 10

Router and single-table runs alternate, so load from elsewhere on the machine weighs on
both alike. Uses CXD_DATABASE_URL / CXD_REDIS_URL when set (a scratch database is created and
dropped; only the bench's own Redis keys are touched), else embedded stores.
Targets: merge <= 1.2x the single table; cached repeat p50 < 2 ms; latest value p99 < 2 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2  # noqa: E402

from batch.load import load_rows  # noqa: E402
from batch.tables import register_dataset  # noqa: E402
from bench.common import percentile, table, timed  # noqa: E402
from cxd import embedded  # noqa: E402
from cxd.catalog import parse_source, save_source  # noqa: E402
from cxd.config import load_settings  # noqa: E402
from cxd.migrations import migrate  # noqa: E402
from cxd.stores import open_stores  # noqa: E402
from query_router import run_query  # noqa: E402
from query_router.execute import ROW_CAP  # noqa: E402
from query_router.saved import run_saved, save_query  # noqa: E402
from speed.stream import append, forget  # noqa: E402

DAY0 = datetime(2026, 5, 4, tzinfo=UTC)
KEYS = [f"m{i:03d}" for i in range(100)]
EV = {
    "name": "bench_ev",
    "type": "webhook",
    "kind": "time_series",
    "columns": [
        {"name": "k", "type": "text"},
        {"name": "t", "type": "timestamptz"},
        {"name": "v", "type": "double precision"},
    ],
    "time_column": "t",
}
LATEST = {
    "name": "bench_latest",
    "type": "webhook",
    "kind": "instantaneous",
    "columns": [
        {"name": "k", "type": "text"},
        {"name": "v", "type": "double precision"},
        {"name": "t", "type": "timestamptz"},
    ],
    "key": ["k"],
    "time_column": "t",
}
FROM, TO = DAY0 + timedelta(days=1), DAY0 + timedelta(days=2, hours=1)
QUERIES = {
    "per-key counts and averages per minute, one day": (
        "SELECT k, date_trunc('minute', t) AS m, count(*) AS n, avg(v) AS a FROM {ev}"
        " WHERE t >= %(lo)s AND t < %(hi)s GROUP BY 1, 2",
        {"lo": FROM, "hi": TO},
    ),
    "one key per minute, one day": (
        "SELECT date_trunc('minute', t) AS m, avg(v) AS a, max(v) AS top FROM {ev}"
        " WHERE k = %(k)s AND t >= %(lo)s AND t < %(hi)s GROUP BY 1",
        {"k": "m007", "lo": FROM, "hi": TO},
    ),
}
PARAMS = [
    {"name": "lo", "type": "timestamptz"},
    {"name": "hi", "type": "timestamptz"},
    {"name": "k", "type": "text"},
]


def router_sql(sql: str) -> str:
    return sql.format(ev="bench_ev").replace("%(", ":").replace(")s", "")


def rows(n: int, start: datetime, span: timedelta, rng: random.Random):
    step = span / n
    for i in range(n):
        yield rng.choice(KEYS), start + step * i, round(rng.uniform(0, 100), 2)


def open_bench_stores(home: Path):
    url = os.environ.get("CXD_DATABASE_URL")
    os.environ.setdefault("CXD_HOME", str(home))
    server = url or embedded.start_postgres(home)
    name = f"cxd_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    os.environ["CXD_DATABASE_URL"] = urlunparse(urlparse(server)._replace(path="/" + name))
    stores = open_stores(load_settings())
    migrate(stores.db)
    return stores, admin, name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=int, default=1_000_000, help="rows in raw (Postgres)")
    ap.add_argument("--speed", type=int, default=50_000, help="rows in the speed layer (Redis)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cxdb-", dir="/tmp"))
    stores, admin, dbname = open_bench_stores(home)
    rng = random.Random(1)
    try:
        specs = {}
        for body in (EV, LATEST):
            spec = parse_source(body)
            save_source(stores.db, spec)
            register_dataset(stores.db, spec)
            specs[spec.name] = spec
        for dataset in ("bench_ev", "bench_latest"):  # every key, the backlog count too
            forget(stores.redis, dataset)
        started = time.perf_counter()
        raw = list(rows(args.raw, DAY0, timedelta(days=2), rng))
        for i in range(0, len(raw), 200_000):
            chunk = [{"k": k, "t": t.isoformat(), "v": v} for k, t, v in raw[i : i + 200_000]]
            load_rows(stores.db, specs["bench_ev"], chunk)
        live = list(rows(args.speed, DAY0 + timedelta(days=2), timedelta(minutes=50), rng))
        for i in range(0, len(live), 2000):
            append(
                stores.redis,
                "bench_ev",
                [{"k": k, "t": t.isoformat(), "v": v} for k, t, v in live[i : i + 2000]],
            )
        append(
            stores.redis,
            "bench_latest",
            [{"k": k, "v": 1.0, "t": DAY0.isoformat()} for k in KEYS],
            key_columns=["k"],
        )
        with stores.db.cursor() as cur:  # the ceiling: one table holding every row
            cur.execute("CREATE TABLE public.bench_all (k text, t timestamptz, v double precision)")
            buf = io.StringIO("".join(f"{k}\t{t.isoformat()}\t{v}\n" for k, t, v in raw + live))
            cur.copy_expert("COPY public.bench_all FROM STDIN", buf)
            cur.execute("CREATE INDEX ON public.bench_all (t)")
            # the same rows with raw's engine columns (_seq, _ingested_at...): raw's rows are
            # wider than bench_all's, which a scan of raw pays whatever the router does
            cur.execute('CREATE TABLE public.bench_wide (LIKE raw."bench_ev" INCLUDING DEFAULTS)')
            cur.execute('INSERT INTO public.bench_wide SELECT * FROM raw."bench_ev"')
            cur.execute(
                "INSERT INTO public.bench_wide (k, t, v) SELECT k, t, v FROM public.bench_all"
                " WHERE t >= %s",
                (DAY0 + timedelta(days=2),),
            )
            cur.execute("CREATE INDEX ON public.bench_wide (t)")
        vacuum = psycopg2.connect(os.environ["CXD_DATABASE_URL"])
        vacuum.autocommit = True  # settled tables (hint bits, visibility map), as in service
        for name in ('raw."bench_ev"', "public.bench_all", "public.bench_wide"):
            vacuum.cursor().execute(f"VACUUM (ANALYZE) {name}")
        vacuum.close()
        setup = time.perf_counter() - started

        results, shapes = [], []
        conn = psycopg2.connect(os.environ["CXD_DATABASE_URL"])
        for label, (sql, values) in QUERIES.items():
            text, used = router_sql(sql), {k: v for k, v in values.items()}
            params = [p for p in PARAMS if p["name"] in used]
            answer = run_query(stores, text, params, used)
            assert answer["freshness"]["plan"] == "merge", answer["freshness"]
            ceiling, router, wide = [], [], []
            with conn.cursor() as cur:

                def baseline(table, cur=cur, sql=sql, values=values):
                    cur.execute(sql.format(ev=table), values)
                    cur.fetchmany(ROW_CAP + 1)  # as many rows as the router reads at most

                baseline("public.bench_all")
                baseline("public.bench_wide")
                # alternate the runs, so that a busy moment of the machine weighs on all
                for _ in range(args.repeats):
                    ceiling.append(timed(lambda: baseline("public.bench_all")))
                    router.append(
                        timed(lambda t=text, p=params, u=used: run_query(stores, t, p, u))
                    )
                    wide.append(timed(lambda: baseline("public.bench_wide")))
            conn.rollback()
            c50, c99 = percentile(ceiling, 50) * 1000, percentile(ceiling, 99) * 1000
            r50, r99 = percentile(router, 50) * 1000, percentile(router, 99) * 1000
            w50 = percentile(wide, 50) * 1000
            results.append([label + " (merge)", r50, r99, c50, c99, r50 / c50, "<= 1.2"])
            shapes.append([label, r50, c50, r50 / c50, w50, r50 / w50])
            name = "q" + uuid.uuid4().hex[:6]
            save_query(stores, {"name": name, "sql": text, "params": params})
            run_saved(stores, name, used)
            cached = [
                timed(lambda n=name, u=used: run_saved(stores, n, u)) for _ in range(args.repeats)
            ]
            h50, h99 = percentile(cached, 50) * 1000, percentile(cached, 99) * 1000
            results.append(
                [label + " (cached repeat)", h50, h99, c50, c99, h50 / c50, "p50 < 2 ms"]
            )
        latest_sql = "SELECT k, v, t FROM bench_latest WHERE k = :k"
        kparam = [{"name": "k", "type": "text"}]
        assert run_query(stores, latest_sql, kparam, {"k": "m001"})["freshness"]["plan"] == "speed"
        with conn.cursor() as cur:

            def latest_baseline():
                cur.execute(
                    "SELECT DISTINCT ON (k) k, v, t FROM public.bench_all WHERE k = %s"
                    " ORDER BY k, t DESC",
                    ("m001",),
                )
                cur.fetchall()

            ceiling = [timed(latest_baseline) for _ in range(args.repeats)]
        latest = [
            timed(lambda: run_query(stores, latest_sql, kparam, {"k": "m001"}))
            for _ in range(max(args.repeats, 200))
        ]
        l50, l99 = percentile(latest, 50) * 1000, percentile(latest, 99) * 1000
        c50, c99 = percentile(ceiling, 50) * 1000, percentile(ceiling, 99) * 1000
        results.append(
            ["latest value (speed only, no Postgres)", l50, l99, c50, c99, l50 / c50, "p99 < 2 ms"]
        )
        conn.close()
        print(
            f"### Query router: {args.raw:,} rows in raw + {args.speed:,} in the speed layer\n\n"
            f"Setup {setup:.0f} s; {args.repeats} repeats per query (latest value: "
            f"{max(args.repeats, 200)}). Ceiling: the same SQL on one Postgres table of all rows"
            f" (both read at most the router's row cap, {ROW_CAP + 1:,} rows, of an answer).\n"
        )
        print(
            table(
                [
                    "query",
                    "router p50 ms",
                    "router p99 ms",
                    "single table p50 ms",
                    "single table p99 ms",
                    "ratio p50",
                    "target",
                ],
                results,
            )  # fmt: skip
        )
        print(
            "\nThe merge against the same rows in one table with raw's engine columns too"
            " (the share of the ratio that is raw's wider rows, not routing):\n"
        )
        print(
            table(
                [
                    "query",
                    "router p50 ms",
                    "single table p50 ms",
                    "ratio",
                    "single table, raw's columns, p50 ms",
                    "ratio",
                ],
                shapes,
            )  # fmt: skip
        )
    finally:
        for dataset in ("bench_ev", "bench_latest"):  # every key, the backlog count too
            forget(stores.redis, dataset)
        stores.close()
        from query_router.execute import close_pools

        close_pools()
        admin.cursor().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        admin.close()
        if not os.environ.get("CXD_DATABASE_URL", "").startswith("postgresql://postgres@127"):
            embedded.stop_postgres(home)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A CSV through the whole batch path (fetch -> archive -> ingest in chunks -> typing and
checks -> COPY into raw, or staging + merge when keys may meet existing rows -> watermark
and cursor, one transaction) versus a bare ``COPY`` of the same file into a table shaped
like raw (same monthly partitions, same indexes), in the same run. Also the worker's peak
memory (ru_maxrss of the process executing the run).

    .venv/bin/python bench/batch_load.py [--rows 1000000] [--repeat 3]

Each round runs in a fresh database and every timed step starts after a CHECKPOINT; the
table shows the best of the rounds and their spread (the machine is shared and noisy).

Stores: CXD_BENCH_DATABASE_URL (default the local PostgreSQL; a fresh database is created
and dropped per round) and CXD_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0, only
published to).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2  # noqa: E402

from bench.common import table  # noqa: E402

PLUGIN = '''
import io
import pandas as pd
from plugins.file import FileSource

class ChunkedCsv(FileSource):
    """The file source, reading a CSV in 100,000-row chunks (bounded memory)."""

    def ingest(self, payload):
        return pd.read_csv(io.BytesIO(payload.content), dtype=str, keep_default_na=False,
                           chunksize=100_000)
'''

BASE = 1_767_225_600  # 2026-01-01T00:00:00Z
COLUMNS = [
    {"name": "id", "type": "bigint"},
    {"name": "site", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "v", "type": "double precision"},
]


def write_csv(path: Path, rows: int) -> None:
    """``rows`` distinct readings over 1,000 sites, one a minute, spanning several months."""
    with path.open("w") as fh:
        fh.write("id,site,at,v\n")
        for i in range(rows):
            t = time.gmtime(BASE + (i // 1000) * 600)
            fh.write(
                f"{i},s{i % 1000},{time.strftime('%Y-%m-%dT%H:%M:%SZ', t)},{(i % 977) * 0.25}\n"
            )


def pipeline(env: dict[str, str], csv: str, out) -> None:
    """Child process: declare the source and execute one run (like an rq worker's horse)."""
    os.environ.update(env)
    from batch.jobs import execute_run
    from batch.runs import create_run
    from batch.tables import register_dataset
    from cxd.catalog import parse_source, save_source
    from cxd.config import load_settings
    from cxd.stores import open_stores

    stores = open_stores(load_settings(), application_name="cxd-bench")
    spec = parse_source(
        {"name": "bench", "type": "python", "plugin": "chunked_csv", "kind": "time_series",
         "options": {"path": csv}, "columns": COLUMNS, "key": ["site", "at"],
         "time_column": "at", "checks": [{"column": "v", "range": [0, 1000]}]}
    )  # fmt: skip
    save_source(stores.db, spec)
    register_dataset(stores.db, spec)
    run_id = create_run(stores.db, "bench")
    start = time.perf_counter()
    run = execute_run(stores, run_id)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the same file again as a full refresh: staging + merge (every key meets a raw row)
    checkpoint(env["CXD_BENCH_CHECKPOINT_URL"])
    start = time.perf_counter()
    full = execute_run(stores, create_run(stores.db, "bench", "full"))
    full_seconds = time.perf_counter() - start
    out.put(
        (run["status"], run["error"], run["rows_loaded"], seconds, peak_mb, run["durations"],
         full["status"], full_seconds)
    )  # fmt: skip


def bare_copy(url: str, csv: Path, rows: int) -> float:
    """Seconds to COPY the file into a table shaped like raw: range-partitioned by month on
    ``at``, with raw's indexes (unique (site, at), (at), and a change sequence column)."""
    last = time.gmtime(BASE + ((rows - 1) // 1000) * 600)
    months = [(2026 + m // 12, m % 12 + 1) for m in range((last.tm_year - 2026) * 12 + last.tm_mon)]
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE SEQUENCE bare_seq; CREATE TABLE bare (id bigint, site text, at timestamptz,"
            " v double precision, _seq bigint NOT NULL DEFAULT nextval('bare_seq'))"
            " PARTITION BY RANGE (at);"
            " CREATE UNIQUE INDEX ON bare (site, at); CREATE INDEX ON bare (at);"
            " CREATE INDEX ON bare (_seq)"
        )
        for year, month in months:
            nxt = (year + month // 12, month % 12 + 1)
            cur.execute(
                f"CREATE TABLE bare_{year}_{month:02d} PARTITION OF bare FOR VALUES"
                f" FROM ('{year}-{month:02d}-01 00:00+00') TO ('{nxt[0]}-{nxt[1]:02d}-01 00:00+00')"
            )
    start = time.perf_counter()
    with conn, conn.cursor() as cur, csv.open() as fh:
        cur.copy_expert("COPY bare (id, site, at, v) FROM STDIN WITH (FORMAT csv, HEADER true)", fh)
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def checkpoint(url: str) -> None:
    """Flush dirty pages before a timed step, so no step pays for the WAL of the one
    before (needs a superuser; skipped otherwise)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    except psycopg2.Error:
        pass
    finally:
        conn.close()


def one_round(server: str, redis_url: str, work: Path, csv: Path, rows: int) -> dict:
    """Bare COPY and the cxd runs, each after a checkpoint, in a fresh database."""
    dbname = f"cxd_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    url = urlunparse(urlparse(server)._replace(path="/" + dbname))
    try:
        from cxd.migrations import migrate
        from cxd.stores import Database

        db = Database(url, maxconn=2)
        migrate(db)
        db.close()
        env = {
            "CXD_DATABASE_URL": url,
            "CXD_REDIS_URL": redis_url,
            "CXD_HOME": str(work / f"home-{dbname}"),
            "CXD_PLUGIN_DIR": str(work / "plugins.d"),
            "CXD_LOG_LEVEL": "WARNING",
            "CXD_BENCH_CHECKPOINT_URL": url,
        }
        checkpoint(url)
        bare = bare_copy(url, csv, rows)
        checkpoint(url)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        child = ctx.Process(target=pipeline, args=(env, str(csv), out))
        child.start()
        status, error, loaded, seconds, peak_mb, durations, full_status, full_seconds = out.get()
        child.join()
        if status != "succeeded" or loaded != rows or full_status != "succeeded":
            raise RuntimeError(f"run {status}, {loaded} rows loaded: {error}")
        return {"bare": bare, "run": seconds, "full": full_seconds, "peak": peak_mb,
                "durations": durations}  # fmt: skip
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is kept")
    args = parser.parse_args()
    server = os.environ.get(
        "CXD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("CXD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    work = Path(tempfile.mkdtemp(prefix="cxd-bench-"))
    try:
        csv = work / "readings.csv"
        write_csv(csv, args.rows)
        (work / "plugins.d").mkdir()
        (work / "plugins.d" / "chunked_csv.py").write_text(PLUGIN)
        rounds = []
        for _ in range(args.repeat):
            try:
                rounds.append(one_round(server, redis_url, work, csv, args.rows))
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
        size_mb = csv.stat().st_size / 1e6
        best = {k: min(r[k] for r in rounds) for k in ("bare", "run", "full")}

        def spread(key: str) -> str:
            values = [r[key] for r in rounds]
            return f"{min(values):.2f}-{max(values):.2f}"

        def ratios(key: str) -> str:
            values = [r["bare"] / r[key] for r in rounds]
            return f"{min(values):.2f}-{max(values):.2f}"

        print(
            f"{args.rows:,} rows, {size_mb:.0f} MB CSV, {len(rounds)} round(s), each in a fresh"
            f" database after a CHECKPOINT; run steps of the fastest run (ms):"
            f" {min(rounds, key=lambda r: r['run'])['durations']}\n"
        )
        print(
            table(
                ["path", "best s", "spread s", "rows/s (best)", "ratio to bare COPY (best/best)",
                 "ratio per round", "peak memory (MB)"],
                [
                    ["bare COPY, same partitions and indexes (ceiling)", best["bare"],
                     spread("bare"), args.rows / best["bare"], 1.0, "-", "-"],
                    ["cxd run: fetch, archive, ingest, check, load into raw", best["run"],
                     spread("run"), args.rows / best["run"], best["bare"] / best["run"],
                     ratios("run"), max(r["peak"] for r in rounds)],
                    ["same file again as a full refresh (staging + merge)", best["full"],
                     spread("full"), args.rows / best["full"], best["bare"] / best["full"],
                     ratios("full"), "-"],
                ],
            )
        )  # fmt: skip
        print(
            "\nTargets: ratio >= 0.7 (second row), worker peak memory < 500 MB (the worker"
            " process's peak over its runs)."
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

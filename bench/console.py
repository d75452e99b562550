"""Console page times with 10,000 runs and 1,000,000 rows in a dataset (server time,
Flask test client), against the 500 ms budget and the floor of a page with no queries
(the login form) measured in the same run.

    .venv/bin/python bench/console.py [--rows N] [--samples N]

Runs on fresh embedded stores in a temporary home (never on configured servers).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, percentile, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()

    from batch.tables import register_dataset
    from cxd import embedded
    from cxd.auth import create_token
    from cxd.catalog import parse_source, save_source
    from cxd.config import Settings
    from cxd.migrations import migrate
    from cxd.stores import open_stores
    from serving import create_app
    from tests.admin.conftest import csv_source
    from tests.admin.test_scale import BUDGET, RUNS, pages, seed, server_times

    home = Path(tempfile.mkdtemp(prefix="cxdb-", dir="/tmp"))
    try:
        stores = open_stores(Settings(home=home))
        migrate(stores.db)
        spec = parse_source(csv_source("weather", "/dev/null", key=["origin", "time_hour"]))
        save_source(stores.db, spec)
        register_dataset(stores.db, spec)
        seed(stores, RUNS, args.rows)
        client = create_app({"CXD_STORES": stores}).test_client()
        client.post("/admin/login", data={"token": create_token(stores.db, "admin")})
        floor = median(server_times(client, "/admin/login", args.samples))
        rows = []
        for url in pages(stores):
            times = server_times(client, url, args.samples)
            p50, p99 = percentile(times, 50), percentile(times, 99)
            rows.append([url, p50 * 1000, p99 * 1000, p99 / BUDGET, p50 / floor])
        stores.close()
    finally:
        embedded.stop_postgres(home)
        embedded.stop_redis(home)
        shutil.rmtree(home, ignore_errors=True)
    print(f"## Console pages ({RUNS:,} runs, {args.rows:,} rows)\n")
    print(f"Floor (login form, no queries): {floor * 1000:.1f} ms p50.\n")
    print(table(["page", "p50 ms", "p99 ms", "p99 / 500 ms budget", "p50 / floor"], rows))


if __name__ == "__main__":
    main()

"""Every console page renders in under 500 ms of server time with 10,000 runs and
1,000,000 rows in a dataset: pages page, counts are estimates, charts use indexes."""

from __future__ import annotations

import os
import time

import pytest

from batch.load import load_rows
from cxd.catalog import get_source

ROWS = int(os.environ.get("CXD_CONSOLE_ROWS", "1000000"))
RUNS = 10_000
BUDGET = 0.5  # seconds of server time per page


def seed(stores, runs: int = RUNS, rows: int = ROWS) -> None:
    """``runs`` runs of ``weather`` (every 97th failed) and ``rows`` rows of 20 origins
    every 30 s from 2026-05-01, generated in SQL."""
    spec = get_source(stores.db, "weather")
    days = [
        {"origin": "ZZZ", "time_hour": f"2026-05-{d:02d}T00:00:00Z", "temp": 0}
        for d in range(1, 19)
    ]
    load_rows(stores.db, spec, days)  # creates the raw table and any time partitions first
    with stores.db.cursor() as cur:
        cur.execute(
            "INSERT INTO cxd.runs (dataset, mode, status, started_at, finished_at, rows_loaded,"
            " rows_quarantined, error, error_step)"
            " SELECT 'weather', 'incremental', CASE WHEN i %% 97 = 0 THEN 'failed' ELSE 'succeeded' END,"
            "  now() - i * interval '1 minute', now() - i * interval '1 minute' + interval '2 s',"
            "  100, i %% 3, CASE WHEN i %% 97 = 0 THEN 'load: timeout' END,"
            "  CASE WHEN i %% 97 = 0 THEN 'load' END"
            " FROM generate_series(1, %s) i",
            (runs,),
        )
        cur.execute(
            "INSERT INTO raw.weather (origin, time_hour, temp, _seq, _run_id)"
            " SELECT 'K' || lpad((i %% 20)::text, 3, '0'),"
            "  timestamptz '2026-05-01' + (i / 20) * interval '30 s',"
            "  round((10 + 15 * sin(i / 2000.0))::numeric, 2), nextval('cxd.change_seq'), 1"
            " FROM generate_series(0, %s - 1) i",
            (rows,),
        )
    stores.db.execute("ANALYZE raw.weather")
    stores.db.execute("ANALYZE cxd.runs")


def pages(stores) -> list[str]:
    """Every console page, with paging and filter variants, for the seeded data."""
    middle = stores.db.fetchone("SELECT max(_seq) - 5000 AS s FROM raw.weather")["s"]
    failed = stores.db.fetchone("SELECT id FROM cxd.runs WHERE status = 'failed' LIMIT 1")["id"]
    half = stores.db.fetchone("SELECT max(id) / 2 AS id FROM cxd.runs")["id"]
    return [
        "/admin/",
        "/admin/overview.json",
        "/admin/overview.part",
        "/admin/sources/weather",
        f"/admin/sources/weather?before={half}",
        "/admin/sources/weather/runs.part",
        "/admin/sources/weather/runs.json",
        f"/admin/runs/{failed}",
        "/admin/datasets/weather",
        f"/admin/datasets/weather?before={middle}",
        "/admin/datasets/weather?f_origin=K007",
        "/admin/datasets/weather?f_time_from=2026-05-03&f_time_to=2026-05-04",
        "/admin/datasets/weather/points.json?after=0-0",
        "/admin/queries",
        "/admin/queries/new",
        "/admin/workers",
    ]


def server_times(client, url: str, repeat: int = 3) -> list[float]:
    """Seconds the app takes to answer ``url``, ``repeat`` times after one warm-up call."""
    first = client.get(url)  # warm: templates compiled, connections open
    assert first.status_code == 200, (url, first.text[:300])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, url
    return times


@pytest.mark.slow
def test_every_page_renders_in_under_500ms(admin_client, weather, stores):
    seed(stores)
    slow = {}
    for url in pages(stores):
        best = min(server_times(admin_client, url))  # the best of three: CI machines are shared
        if best >= BUDGET:
            slow[url] = round(best * 1000)
    assert not slow, f"pages over {BUDGET * 1000:.0f} ms: {slow}"
    overview = admin_client.get("/admin/overview.json").get_json()[0]
    assert overview["rows"] > ROWS * 0.9 and not overview["rows_exact"]
    page = admin_client.get("/admin/datasets/weather").text
    assert page.count("<tr><td") <= 60  # a page of rows, never the dataset

"""The batch commands as an operator runs them: run, status, reprocess, backfill, and the
batch load bench at a small size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[2]


def cxd(tmp_path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "cxd.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_run_status_reprocess_backfill(stores, settings, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text(
        "origin,time_hour,temp\nEWR,2026-05-05T10:00:00Z,12\nJFK,2026-05-06T10:00:00Z,hot\n"
    )
    settings.config_file.write_text(
        "sources:\n"
        "  - name: weather\n"
        "    type: file\n"
        "    options: {path: 'data/*.csv'}\n"
        "    columns: [{name: origin, type: text}, {name: time_hour, type: timestamptz},"
        " {name: temp, type: double precision}]\n"
        "    key: [origin, time_hour]\n"
        "    time_column: time_hour\n"
        "    checks: [{column: temp, range: [-60, 60]}]\n"
    )
    cxd(tmp_path, "init")
    out = cxd(tmp_path, "run", "weather").stdout
    assert "2 rows fetched, 1 loaded, 1 quarantined" in out
    [row] = json.loads(cxd(tmp_path, "status", "--json").stdout)
    assert row["last_run"] == "#1 succeeded" and row["quarantined"] == 1

    (data / "a.csv").unlink()  # reprocess reads the archive, never the source
    out = cxd(tmp_path, "reprocess", "weather", "--run", "1").stdout
    assert "run 2 of weather (reprocess)" in out and "0 loaded" in out

    (data / "b.csv").write_text(
        "origin,time_hour,temp\nEWR,2026-05-05T10:00:00Z,13\nEWR,2026-07-01T00:00:00Z,20\n"
    )
    cursor = stores.db.fetchone("SELECT cursor FROM cxd.watermarks WHERE dataset = 'weather'")
    out = cxd(tmp_path, "backfill", "weather", "--from", "2026-05-01", "--to", "2026-06-01").stdout
    assert "1 loaded" in out
    assert stores.db.fetchall("SELECT temp FROM raw.weather") == [{"temp": 13.0}]
    assert (
        stores.db.fetchone("SELECT cursor FROM cxd.watermarks WHERE dataset = 'weather'") == cursor
    )

    assert "succeeded" in cxd(tmp_path, "run", "weather", "--full").stdout
    assert stores.db.fetchone("SELECT count(*) AS n FROM raw.weather")["n"] == 2

    bad = cxd(tmp_path, "backfill", "weather", "--from", "May", "--to", "June", ok=False)
    assert bad.returncode == 1 and "backfill needs from and to as ISO 8601 times" in bad.stderr
    missing = cxd(tmp_path, "reprocess", "nowhere", ok=False)
    assert (
        "no source or dataset named 'nowhere'" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_bench_batch_load_runs_at_small_size(store_urls):
    db_url, redis_url = store_urls
    server = urlunparse(urlparse(db_url)._replace(path="/postgres"))
    result = subprocess.run(
        [sys.executable, "bench/batch_load.py", "--rows", "5000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CXD_BENCH_DATABASE_URL": server, "CXD_BENCH_REDIS_URL": redis_url},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| bare COPY, same partitions and indexes (ceiling) |" in result.stdout
    assert "| cxd run: fetch, archive, ingest, check, load into raw |" in result.stdout

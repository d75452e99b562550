"""The ``cxd`` commands of getting-started, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(stores, settings, tmp_path):
    data = tmp_path / "data" / "weather"
    data.mkdir(parents=True)
    (data / "a.csv").write_text(
        "origin,time_hour,temp\nEWR,2026-05-05T10:00:00Z,12\nEWR,2026-05-05T11:00:00Z,14\nJFK,2026-05-05T10:00:00Z,9\n"
    )
    settings.config_file.write_text(
        "sources:\n"
        "  - name: weather\n"
        "    type: file\n"
        "    options: {path: 'data/weather/*.csv', format: csv}\n"
        "    columns: [{name: origin, type: text}, {name: time_hour, type: timestamptz},"
        " {name: temp, type: double precision}]\n"
        "    key: [origin, time_hour]\n"
        "    time_column: time_hour\n"
        "    schedule: {every: 30m}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "cxd.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def test_getting_started_commands(cli, stores):
    out = cli("init").stdout
    assert "1 source(s)" in out
    assert cli("init").returncode == 0  # idempotent

    run = cli("run", "weather").stdout
    assert "3 rows fetched, 3 loaded" in run
    again = cli("run", "weather").stdout  # the same files are not loaded twice
    assert "0 rows fetched" in again

    status = cli("status", "--json").stdout
    [row] = json.loads(status)
    assert row["dataset"] == "weather" and row["last_run"].endswith("succeeded")

    answer = json.loads(
        cli(
            "query", "SELECT origin, avg(temp) AS t FROM weather GROUP BY origin ORDER BY origin"
        ).stdout
    )
    assert answer["rows"] == [{"origin": "EWR", "t": 13.0}, {"origin": "JFK", "t": 9.0}]
    assert answer["freshness"]["plan"] == "batch"
    plan = json.loads(cli("query", "SELECT count(*) FROM weather", "--explain").stdout)
    assert plan["plan"] == "batch" and "raw" in plan["sql"]

    token = cli("token", "create", "--role", "read").stdout.strip().splitlines()[-1]
    from cxd.auth import role_of

    assert role_of(stores.db, token) == "read"


def test_query_errors_are_one_line(cli):
    cli("init")
    result = cli("query", "DELETE FROM weather", ok=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "only SELECT" in result.stderr
    result = cli("query", "SELECT * FROM nowhere", ok=False)
    assert "no dataset named 'nowhere'" in result.stderr


def test_bench_startup_runs_at_small_size():
    result = subprocess.run(
        [sys.executable, "bench/startup.py", "--rounds", "1", "--samples", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| embedded Postgres, first start (initdb) |" in result.stdout
    assert "thin path round trip p50" in result.stdout

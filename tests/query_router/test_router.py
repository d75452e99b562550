"""The router as analysts and dashboards see it: parameters, plans, speed-only answers,
keyed merges, the result cache and stale pull sources."""

from __future__ import annotations

import threading
import time

import pytest

from batch.jobs import execute_run
from batch.load import load_rows
from cxd.errors import CxdError
from query_router import execute as executor
from query_router import explain, run_query
from query_router.saved import delete_query, plan_saved, run_saved, save_query
from speed.loader import drain
from speed.stream import append
from tests.query_router.conftest import declare


class Counted:
    """Counts every Postgres use: the engine's pool and the analyst executor."""

    def __init__(self, stores, monkeypatch):
        self.n = 0
        real = stores.db.connection

        def connection(*a, **k):
            self.n += 1
            return real(*a, **k)

        monkeypatch.setattr(stores.db, "connection", connection)
        self.stores = stores

    def total(self) -> int:
        return self.n + executor.STATS["postgres_queries"]


def test_named_and_positional_parameters_are_typed(corpus):
    params = [{"name": "origin", "type": "text"}, {"name": "min", "type": "float", "default": 0}]
    sql = "SELECT origin, temp FROM weather WHERE origin = :origin AND temp > $2 ORDER BY temp"
    result = run_query(corpus, sql, params, {"origin": "EWR", "min": "12.7"})
    assert [r["temp"] for r in result["rows"]] == [13.0]
    with pytest.raises(CxdError) as err:
        run_query(corpus, sql, params, {"origin": "EWR", "min": "warm"})
    assert err.value.status == 400 and "'min'" in err.value.message
    assert err.value.details["parameter"] == "min"
    with pytest.raises(CxdError, match="'origin' is required"):
        run_query(corpus, sql, params, {})


def test_saved_query_is_run_with_defaults_when_saved(corpus, client, auth):
    bad = client.post(
        "/api/queries",
        json={
            "name": "bad_types",
            "sql": "SELECT origin FROM weather WHERE temp > :label",
            "params": [{"name": "label", "type": "text", "default": "x"}],
        },
        headers=auth("analyst"),
    )
    assert bad.status_code == 400
    assert "operator does not exist" in bad.get_json()["error"]["message"]
    wrong_outputs = client.post(
        "/api/queries",
        json={
            "name": "outs",
            "sql": "SELECT origin, count(*) AS n FROM weather GROUP BY origin",
            "outputs": [{"name": "origin", "type": "text"}, {"name": "total", "type": "bigint"}],
        },
        headers=auth("analyst"),
    )
    assert wrong_outputs.status_code == 400
    assert "no column 'total'" in wrong_outputs.get_json()["error"]["message"]
    ok = client.post(
        "/api/queries",
        json={
            "name": "warm",
            "sql": "SELECT origin FROM weather WHERE temp > :t ORDER BY origin",
            "params": [{"name": "t", "type": "integer", "default": 12}],
            "outputs": [{"name": "origin", "type": "text"}],
        },
        headers=auth("analyst"),
    )
    assert ok.status_code == 201, ok.get_json()
    r = client.get("/api/queries/warm/results?t=abc", headers=auth("read"))
    assert r.status_code == 400 and "'t'" in r.get_json()["error"]["message"]
    assert client.get("/api/queries/warm/results?t=13", headers=auth("read")).get_json()[
        "rows"
    ] == [{"origin": "LGA"}, {"origin": "S1"}]


def test_saved_query_answers_and_is_deleted(corpus):
    save_query(
        corpus,
        {
            "name": "warm",
            "sql": "SELECT origin FROM weather WHERE temp > :t ORDER BY origin",
            "params": [{"name": "t", "type": "integer", "default": 12}],
        },
    )
    assert run_saved(corpus, "warm", {"t": 13})["rows"] == [{"origin": "LGA"}, {"origin": "S1"}]
    assert run_saved(corpus, "warm", {})["rows"] == [
        {"origin": "EWR"},
        {"origin": "EWR"},
        {"origin": "LGA"},
        {"origin": "S1"},
    ]
    delete_query(corpus, "warm")
    with pytest.raises(CxdError, match="no saved query"):
        run_saved(corpus, "warm", {})


def test_cache_hit_costs_no_postgres_query_and_changes_invalidate(corpus, monkeypatch):
    save_query(corpus, {"name": "counts", "sql": "SELECT count(*) AS n FROM weather"})
    counted = Counted(corpus, monkeypatch)
    first = run_saved(corpus, "counts", {})
    assert first["rows"] == [{"n": 5}] and first["freshness"]["cached"] is False
    used = counted.total()
    assert used >= 1
    again = run_saved(corpus, "counts", {})
    assert again["rows"] == [{"n": 5}] and again["freshness"]["cached"] is True
    assert counted.total() == used  # the hit did not touch Postgres
    append(corpus.redis, "weather", [{"origin": "X", "time_hour": "2026-05-06T00:00:00Z"}])
    fresh = run_saved(corpus, "counts", {})
    assert fresh["rows"] == [{"n": 6}] and fresh["freshness"]["cached"] is False
    assert drain(corpus, "weather") == 3
    after = run_saved(corpus, "counts", {})  # the load announced "batch": a new entry
    assert after["rows"] == [{"n": 6}] and after["freshness"]["cached"] is False
    weather = __import__("cxd.catalog", fromlist=["get_source"]).get_source(corpus.db, "weather")
    load_rows(corpus.db, weather, [{"origin": "Y", "time_hour": "2026-05-07T00:00:00Z"}])
    corpus.redis.publish("cxd:{weather}:changed", "batch")  # what every load announces
    assert run_saved(corpus, "counts", {})["rows"] == [{"n": 7}]


def test_instantaneous_latest_values_never_touch_postgres(corpus, monkeypatch):
    run_query(corpus, "SELECT * FROM levels")  # warm the catalog
    counted = Counted(corpus, monkeypatch)
    before = counted.total()
    result = run_query(corpus, "SELECT station, level FROM levels WHERE station = 'S2'")
    assert result["rows"] == [{"station": "S2", "level": 2.5}]
    assert result["freshness"]["plan"] == "speed"
    assert counted.total() == before
    append(
        corpus.redis,
        "levels",
        [{"station": "S2", "level": 9.0, "at": "2026-05-05T11:00:00Z"}],
        key_columns=["station"],
    )
    rows = run_query(corpus, "SELECT station, level FROM levels ORDER BY level DESC LIMIT 1")
    assert rows["rows"] == [{"station": "S2", "level": 9.0}]
    assert counted.total() == before


def test_keyed_merge_counts_an_updated_row_once(corpus):
    spec = declare(
        corpus,
        name="meters",
        type="webhook",
        kind="time_series",
        columns=[
            {"name": "m", "type": "text"},
            {"name": "t", "type": "timestamptz"},
            {"name": "kwh", "type": "integer"},
        ],
        key=["m", "t"],
        time_column="t",
    )
    load_rows(corpus.db, spec, [{"m": "a", "t": "2026-01-01T00:00:00Z", "kwh": 1}])
    append(
        corpus.redis,
        "meters",
        [
            {"m": "a", "t": "2026-01-01T00:00:00Z", "kwh": 5},  # corrects the raw row
            {"m": "b", "t": "2026-01-01T00:00:00Z", "kwh": 2},
            {"m": "b", "t": "2026-01-01T00:00:00Z", "kwh": 3},  # the last of a key wins
        ],
    )
    sql = "SELECT m, sum(kwh) AS kwh, count(*) AS n FROM meters GROUP BY m ORDER BY m"
    merged = run_query(corpus, sql)["rows"]
    assert merged == [{"m": "a", "kwh": 5, "n": 1}, {"m": "b", "kwh": 3, "n": 1}]
    drain(corpus, "meters")
    assert run_query(corpus, sql)["rows"] == merged


def test_plan_explains_watermark_high_water_and_estimates(corpus, client, auth):
    plan = explain(
        corpus,
        "SELECT count(*) FROM weather WHERE time_hour < :before",
        [{"name": "before", "type": "timestamptz", "default": "2026-05-05T10:30:00Z"}],
    )
    weather = plan["datasets"]["weather"]
    assert plan["plan"] == "batch"  # every speed event is later than the range
    assert weather["speed_high_water"] != "0-0" and weather["batch_watermark"] == "0-0"
    assert weather["time_range"] == [None, "2026-05-05T10:30:00+00:00"]
    assert "before the earliest speed event" in plan["notes"][0]
    later = explain(corpus, "SELECT count(*) FROM weather")
    assert later["plan"] == "merge" and later["datasets"]["weather"]["speed_rows"] == 2
    save_query(
        corpus,
        {
            "name": "since",
            "sql": "SELECT origin FROM weather WHERE time_hour < :t",
            "params": [{"name": "t", "type": "timestamptz", "default": "2026-05-05T11:30:00Z"}],
        },
    )
    assert plan_saved(corpus, "since", {"t": "2026-05-06T00:00:00Z"})["plan"] == "merge"
    r = client.get("/api/queries/since/plan", headers=auth("read"))
    assert r.status_code == 200 and r.get_json()["plan"] in ("batch", "merge")


def test_row_cap_and_statement_timeout_hold(corpus):
    capped = executor.run_as_analyst(corpus, "SELECT generate_series(1, 50) AS n", row_cap=10)
    assert len(capped["rows"]) == 10 and capped["truncated"] is True
    started = time.monotonic()
    with pytest.raises(CxdError, match="statement timeout"):
        executor.run_as_analyst(
            corpus,
            "SELECT count(*) FROM generate_series(1, 100000000) a",
            timeout_ms=200,
        )
    assert time.monotonic() - started < 5


PULL = {
    "name": "prices",
    "type": "file",
    "kind": "time_series",
    "columns": [{"name": "item", "type": "text"}, {"name": "at", "type": "timestamptz"}],
    "time_column": "at",
}


def test_stale_pull_source_is_flagged(corpus, tmp_path):
    (tmp_path / "p.csv").write_text("item,at\napple,2026-05-05T10:00:00Z\n")
    declare(
        corpus,
        **PULL,
        options={"path": str(tmp_path / "*.csv"), "format": "csv"},
        freshness={"max_age": "10m", "policy": "flag"},
    )
    result = run_query(corpus, "SELECT count(*) AS n FROM prices")
    assert result["freshness"]["stale"] is True  # never refreshed
    assert result["freshness"]["datasets"]["prices"]["stale"] is True
    weather_only = run_query(corpus, "SELECT count(*) FROM weather")
    assert weather_only["freshness"]["stale"] is False


def test_stale_pull_source_is_refreshed_within_the_deadline(corpus, tmp_path):
    (tmp_path / "p.csv").write_text(
        "item,at\napple,2026-05-05T10:00:00Z\npear,2026-05-05T11:00:00Z\n"
    )
    declare(
        corpus,
        **PULL,
        options={"path": str(tmp_path / "*.csv"), "format": "csv"},
        freshness={"max_age": "10m", "policy": "refresh", "deadline": "60s"},
    )
    stop = threading.Event()

    def worker():
        """Plays the rq worker: runs each queued run of this test's database."""
        while not stop.is_set():
            for row in corpus.db.fetchall("SELECT id FROM cxd.runs WHERE status = 'queued'"):
                execute_run(corpus, row["id"])
            time.sleep(0.05)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        result = run_query(corpus, "SELECT count(*) AS n FROM prices")
    finally:
        stop.set()
        thread.join()
    assert result["rows"] == [{"n": 2}]
    fresh = result["freshness"]["datasets"]["prices"]
    assert fresh["stale"] is False and "succeeded" in fresh["refresh"]
    assert fresh["refreshed_at"] is not None


def test_refresh_that_misses_the_deadline_answers_flagged(corpus, tmp_path):
    (tmp_path / "p.csv").write_text("item,at\napple,2026-05-05T10:00:00Z\n")
    declare(
        corpus,
        **PULL,
        options={"path": str(tmp_path / "*.csv"), "format": "csv"},
        freshness={"max_age": "10m", "policy": "refresh", "deadline": "200ms"},
    )
    result = run_query(corpus, "SELECT count(*) AS n FROM prices")  # no worker is running
    assert result["rows"] == [{"n": 0}]
    fresh = result["freshness"]["datasets"]["prices"]
    assert fresh["stale"] is True and "queued" in fresh["refresh"]


LIVE = "SELECT count(*) AS n, avg(temp) AS a, max(time_hour) AS last FROM weather WHERE time_hour > :since"
SINCE = [{"name": "since", "type": "timestamptz"}]


def _no_postgres(corpus, monkeypatch) -> Counted:
    """Count every Postgres use, and make the analyst pool unusable."""
    counted = Counted(corpus, monkeypatch)
    executor.close_pools()

    def closed(url):
        raise AssertionError("the analyst pool was asked for a connection")

    monkeypatch.setattr(executor, "pool", closed)
    return counted


def test_live_window_after_raw_is_answered_from_the_speed_layer_alone(corpus, monkeypatch):
    since = {"since": "2026-05-05T11:30:00Z"}  # raw's newest row is at 11:00
    first = run_query(corpus, LIVE, SINCE, since)  # reads raw's newest time with W
    assert first["freshness"]["plan"] == "merge"
    assert first["rows"][0]["n"] == 1
    with monkeypatch.context() as patch:
        counted = _no_postgres(corpus, patch)
        before = counted.total()
        live = run_query(corpus, LIVE, SINCE, since)
        assert live["freshness"]["plan"] == "speed"
        assert live["rows"] == [{"n": 1, "a": 13.0, "last": first["rows"][0]["last"]}]
        assert live["rows"] == first["rows"]
        late = {"origin": "JFK", "time_hour": "2026-05-05T12:30:00Z", "temp": 15.0}
        append(corpus.redis, "weather", [late])
        newer = run_query(corpus, LIVE, SINCE, since)
        assert newer["freshness"]["plan"] == "speed"
        assert (newer["rows"][0]["n"], newer["rows"][0]["a"]) == (2, 14.0)
        rows = run_query(
            corpus,
            "SELECT origin, temp FROM weather WHERE time_hour >= :since ORDER BY temp DESC",
            SINCE,
            since,
        )
        assert rows["freshness"]["plan"] == "speed"
        assert rows["rows"] == [{"origin": "JFK", "temp": 15.0}, {"origin": "EWR", "temp": 13.0}]
        assert counted.total() == before  # not one Postgres statement or connection
    plan = explain(corpus, LIVE, SINCE, since)
    assert plan["plan"] == "speed"
    assert plan["datasets"]["weather"]["raw_newest_time"].startswith("2026-05-05T11:00")
    assert plan["datasets"]["weather"]["speed_rows"] == 3
    assert any("live window" in note for note in plan["notes"])


def test_live_window_reads_raw_again_after_a_load(corpus):
    since = {"since": "2026-05-05T11:30:00Z"}
    assert run_query(corpus, LIVE, SINCE, since)["rows"][0]["n"] == 1
    assert run_query(corpus, LIVE, SINCE, since)["freshness"]["plan"] == "speed"
    assert drain(corpus, "weather") == 2  # announces "batch": raw gained rows in the window
    after = run_query(corpus, LIVE, SINCE, since)
    assert after["freshness"]["plan"] != "speed" and after["rows"][0]["n"] == 1
    # raw now holds the 12:00 row: this window is no longer after raw's newest time
    append(corpus.redis, "weather", [{"origin": "X", "time_hour": "2026-05-05T12:40:00Z"}])
    again = run_query(corpus, LIVE, SINCE, since)
    assert again["freshness"]["plan"] == "merge" and again["rows"][0]["n"] == 2
    assert "inside the range" in " ".join(explain(corpus, LIVE, SINCE, since)["notes"])
    later = {"since": "2026-05-05T12:10:00Z"}
    assert run_query(corpus, LIVE, SINCE, later)["freshness"]["plan"] == "speed"
    assert run_query(corpus, LIVE, SINCE, later)["rows"][0]["n"] == 1
    # a load that bypasses the stream announces itself; the window must count its row
    weather = __import__("cxd.catalog", fromlist=["get_source"]).get_source(corpus.db, "weather")
    row = {"origin": "Z", "time_hour": "2026-05-05T12:20:00Z", "temp": 1.0}
    load_rows(corpus.db, weather, [row])
    corpus.redis.publish("cxd:{weather}:changed", "batch")
    merged = run_query(corpus, LIVE, SINCE, later)
    assert merged["freshness"]["plan"] == "merge" and merged["rows"][0]["n"] == 2


def test_live_window_relative_to_now(corpus, monkeypatch):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    append(
        corpus.redis,
        "weather",
        [
            {"origin": "A", "time_hour": (now - timedelta(seconds=2)).isoformat(), "temp": 1.0},
            {"origin": "B", "time_hour": (now - timedelta(minutes=5)).isoformat(), "temp": 2.0},
        ],
    )
    sql = "SELECT origin FROM weather WHERE time_hour > now() - interval '1 minute'"
    assert run_query(corpus, sql)["rows"] == [{"origin": "A"}]
    with monkeypatch.context() as patch:
        counted = _no_postgres(corpus, patch)
        before = counted.total()
        live = run_query(corpus, sql)
        assert live["freshness"]["plan"] == "speed", live["freshness"]
        assert live["rows"] == [{"origin": "A"}]
        assert counted.total() == before


def test_routed_answer_stops_at_the_row_cap_and_the_connection_stays_usable(corpus):
    from query_router.router import execute_plan, plan_query

    sql = "SELECT origin, n FROM weather, generate_series(1, 20000) AS n"
    capped = execute_plan(corpus, plan_query(corpus, sql), row_cap=10)
    assert len(capped["rows"]) == 10 and capped["truncated"] is True
    empty = run_query(corpus, "SELECT origin FROM weather WHERE temp > 1000")
    assert empty["rows"] == [] and [c["name"] for c in empty["columns"]] == ["origin"]
    assert run_query(corpus, "SELECT count(*) AS n FROM weather")["rows"] == [{"n": 5}]

"""Data quality: bad rows are quarantined with line and reason while good rows load;
dataset checks write quality events and an error check stops the whole load."""

from __future__ import annotations

import pytest

from plugins.exceptions import PluginConfigError

COLUMNS = [
    {"name": "origin", "type": "text"},
    {"name": "time_hour", "type": "timestamptz"},
    {"name": "temp", "type": "double precision"},
    {"name": "n", "type": "integer"},
]


@pytest.fixture
def weather(declare, tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()

    def make(checks=(), **extra):
        return declare(
            name="weather",
            type="file",
            kind="time_series",
            options={"path": f"{folder}/*.csv", "format": "csv"},
            columns=COLUMNS,
            key=["origin", "time_hour"],
            time_column="time_hour",
            checks=list(checks),
            **extra,
        )

    make.folder = folder
    return make


def test_malformed_rows_are_quarantined_with_line_and_reason(weather, run_now, rows, stores):
    weather()
    (weather.folder / "a.csv").write_text(
        "origin,time_hour,temp,n\n"
        "EWR,2026-05-05T10:00:00Z,12.5,1\n"
        "JFK,yesterday,11.0,2\n"
        "LGA,2026-05-05T10:00:00Z,warm,3\n"
        "EWR,2026-05-05T11:00:00Z,13.0,4.5\n"
        "JFK,2026-05-05T11:00:00Z,9.0,99999999999\n"
        ",2026-05-05T12:00:00Z,1.0,6\n"
        "JFK,2026-05-05T12:00:00Z,,7\n"
    )
    run = run_now("weather")
    assert run["status"] == "succeeded", run["error"]
    assert (run["rows_fetched"], run["rows_loaded"], run["rows_quarantined"]) == (7, 2, 5)
    assert rows("SELECT origin, temp, n FROM raw.weather ORDER BY origin") == [
        ("EWR", 12.5, 1),
        ("JFK", None, 7),
    ]
    bad = stores.db.fetchall(
        "SELECT line, check_name, reason, row FROM cxd.quarantine WHERE run_id = %s ORDER BY line",
        (run["id"],),
    )
    assert [(b["line"], b["check_name"]) for b in bad] == [
        (3, "type:time_hour"),
        (4, "type:temp"),
        (5, "type:n"),
        (6, "type:n"),
        (7, "required:origin"),
    ]
    assert "yesterday" in bad[0]["reason"] and "timestamp" in bad[0]["reason"]
    assert bad[1]["row"] == {
        "origin": "LGA",
        "time_hour": "2026-05-05T10:00:00Z",
        "temp": "warm",
        "n": "3",
    }
    events = stores.db.fetchall(
        "SELECT check_name, severity FROM cxd.quality_events WHERE run_id = %s", (run["id"],)
    )
    assert {e["check_name"] for e in events} == {
        "type:time_hour",
        "type:temp",
        "type:n",
        "required:origin",
    }
    logged = [e["message"] for e in run["log"] if e.get("check_name") == "type:temp"]
    assert logged == [
        "quality warning: type:temp: 1 row(s) quarantined (line 4: expected a number, got 'warm')"
    ]


def test_declared_row_checks(weather, run_now, rows, stores):
    weather(
        checks=[
            {"column": "temp", "range": [-60, 60]},
            {"column": "temp", "not_null": True},
            {"column": "origin", "allowed": ["EWR", "JFK"]},
            {"unique": ["origin", "time_hour"]},
        ]
    )
    (weather.folder / "a.csv").write_text(
        "origin,time_hour,temp,n\n"
        "EWR,2026-05-05T10:00:00Z,12.5,1\n"
        "EWR,2026-05-05T11:00:00Z,99,2\n"
        "JFK,2026-05-05T10:00:00Z,,3\n"
        "BOS,2026-05-05T10:00:00Z,5,4\n"
        "EWR,2026-05-05T10:00:00Z,14,5\n"
    )
    run = run_now("weather")
    assert run["status"] == "succeeded"
    assert rows("SELECT origin, temp, n FROM raw.weather") == [("EWR", 12.5, 1)]
    got = rows("SELECT line, check_name FROM cxd.quarantine ORDER BY line")
    assert got == [
        (3, "range:temp"),
        (4, "not_null:temp"),
        (5, "allowed:origin"),
        (6, "unique:origin,time_hour"),
    ]
    reason = rows("SELECT reason FROM cxd.quarantine WHERE line = 3")[0][0]
    assert "99" in reason and "[-60, 60]" in reason


def test_row_count_drop_fails_the_load_and_applies_nothing(weather, run_now, rows, stores):
    weather(checks=[{"row_count_drop": 0.5}])
    body = "origin,time_hour,temp,n\n" + "".join(
        f"EWR,2026-05-05T{h:02d}:00:00Z,{h},1\n" for h in range(10)
    )
    (weather.folder / "a.csv").write_text(body)
    assert run_now("weather", "full")["status"] == "succeeded"
    (weather.folder / "a.csv").write_text(
        "origin,time_hour,temp,n\nEWR,2026-05-05T00:00:00Z,100,1\nEWR,2026-05-05T01:00:00Z,100,1\n"
    )
    cursor_before = rows("SELECT cursor FROM cxd.watermarks WHERE dataset = 'weather'")
    run = run_now("weather", "full")
    assert run["status"] == "failed"
    assert run["error_step"] == "load"
    assert "row_count_drop" in run["error"] and "80% below" in run["error"]
    # nothing of the load applied: old rows intact, cursor unchanged
    assert rows("SELECT count(*), max(temp) FROM raw.weather") == [(10, 9.0)]
    assert rows("SELECT cursor FROM cxd.watermarks WHERE dataset = 'weather'") == cursor_before
    assert rows(
        "SELECT check_name, severity FROM cxd.quality_events WHERE run_id = %s", (run["id"],)
    ) == [("row_count_drop", "error")]


def test_staleness_is_a_warning_event(weather, run_now, rows):
    weather(checks=[{"staleness": "1d"}])
    (weather.folder / "a.csv").write_text("origin,time_hour,temp,n\nEWR,2020-01-01T00:00:00Z,1,1\n")
    run = run_now("weather")
    assert run["status"] == "succeeded"
    [(name, severity, message)] = rows(
        "SELECT check_name, severity, message FROM cxd.quality_events WHERE run_id = %s",
        (run["id"],),
    )
    assert (name, severity) == ("staleness", "warning")
    assert "2020-01-01" in message


def test_bad_checks_are_all_reported_at_once(weather, run_now, stores):
    from cxd.catalog import get_source
    from plugins.registry import plugin_for

    weather(
        checks=[
            {"column": "nope", "range": [0, 1]},
            {"column": "temp", "range": 5},
            {"row_count_drop": 3},
            {"bogus": 1},
        ]
    )
    with pytest.raises(PluginConfigError) as err:
        plugin_for(get_source(stores.db, "weather"))
    problems = err.value.details["problems"]
    assert len(problems) == 4, problems
    run = run_now("weather")
    assert run["status"] == "failed" and run["error_step"] == "setup"
    assert "4 setting problem(s)" in run["error"]

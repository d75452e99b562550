"""Refresh modes and schedule slots: incremental loads follow a changing source exactly,
a slot never runs twice, full refresh replaces atomically, backfill keeps the cursor."""

from __future__ import annotations

import pytest

from batch.jobs import enqueue_run
from batch.schedule import slot_of


@pytest.fixture
def temps(declare, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    declare(
        name="temps",
        type="file",
        kind="time_series",
        options={"path": f"{folder}/*.csv"},
        columns=[{"name": "site", "type": "text"}, {"name": "at", "type": "timestamptz"},
                 {"name": "v", "type": "double precision"}],
        key=["site", "at"],
        time_column="at",
    )  # fmt: skip

    def write(name: str, lines: list[tuple[str, str, float]]) -> None:
        body = "site,at,v\n" + "".join(f"{s},{a},{v}\n" for s, a, v in lines)
        (folder / name).write_text(body)

    write.folder = folder
    return write


def test_incremental_loads_follow_a_changing_source(temps, run_now, rows):
    source: dict[tuple[str, str], float] = {}
    for step in range(4):
        batch = [
            (f"s{i % 3}", f"2026-05-0{1 + step}T{i:02d}:00:00Z", step * 10.0 + i) for i in range(5)
        ]
        if step:  # a correction of an earlier reading arrives in a later file
            batch.append(("s0", "2026-05-01T00:00:00Z", 99.0 + step))
        temps(f"{step}.csv", batch)
        for s, a, v in batch:
            source[(s, a)] = v
        run = run_now("temps")
        assert run["status"] == "succeeded", run["error"]
        got = {
            (s, a.strftime("%Y-%m-%dT%H:%M:%SZ")): v
            for s, a, v in rows("SELECT site, at, v FROM raw.temps")
        }
        assert got == source
    again = run_now("temps")
    assert (again["rows_fetched"], again["rows_loaded"]) == (0, 0)


def test_a_schedule_slot_runs_once(temps, stores, run_jobs, rows):
    temps("a.csv", [("x", "2026-05-05T00:00:00Z", 1.0)])
    slot = slot_of(1800)
    first = enqueue_run(stores, "temps", slot=slot)
    assert first is not None
    assert enqueue_run(stores, "temps", slot=slot) is None  # a second scheduler, a restart
    assert run_jobs() == 1
    assert rows("SELECT count(*) FROM cxd.runs") == [(1,)]
    assert rows("SELECT status, slot FROM cxd.runs") == [("succeeded", slot)]
    assert slot_of("0 3 * * *").endswith("T03:00:00+00:00")


def test_full_refresh_replaces_atomically(temps, run_now, rows):
    temps("a.csv", [("x", "2026-05-05T00:00:00Z", 1.0), ("y", "2026-05-05T00:00:00Z", 2.0)])
    run_now("temps")
    (temps.folder / "a.csv").unlink()
    temps("b.csv", [("y", "2026-05-05T00:00:00Z", 3.0), ("z", "2026-05-05T00:00:00Z", 4.0)])
    run = run_now("temps", "full")
    assert run["status"] == "succeeded"
    assert rows("SELECT site, v FROM raw.temps ORDER BY site") == [("y", 3.0), ("z", 4.0)]
    cursor = rows("SELECT cursor FROM cxd.watermarks WHERE dataset = 'temps'")[0][0]
    assert len(cursor["seen"]) == 1 and "b.csv" in cursor["seen"][0]


def test_backfill_loads_a_range_and_keeps_the_cursor(temps, run_now, rows):
    temps("a.csv", [("x", "2026-05-01T00:00:00Z", 1.0)])
    run_now("temps")
    cursor = rows("SELECT cursor FROM cxd.watermarks WHERE dataset = 'temps'")
    temps("a.csv", [("x", "2026-05-01T00:00:00Z", 1.5), ("x", "2026-05-02T00:00:00Z", 2.0),
                    ("x", "2026-06-01T00:00:00Z", 3.0)])  # fmt: skip
    run = run_now(
        "temps", "backfill", {"from": "2026-05-01T00:00:00Z", "to": "2026-05-31T00:00:00Z"}
    )
    assert run["status"] == "succeeded", run["error"]
    assert rows("SELECT v FROM raw.temps ORDER BY at") == [(1.5,), (2.0,)]
    assert rows("SELECT cursor FROM cxd.watermarks WHERE dataset = 'temps'") == cursor
    assert any(e.get("out_of_range") == 1 for e in run["log"])


def test_last_row_per_key_wins_within_one_load(temps, run_now, rows):
    temps("a.csv", [("x", "2026-05-05T00:00:00Z", 1.0), ("y", "2026-05-05T00:00:00Z", 2.0),
                    ("x", "2026-05-05T00:00:00Z", 3.0)])  # fmt: skip
    run = run_now("temps")
    assert run["status"] == "succeeded", run["error"]
    assert rows("SELECT site, v FROM raw.temps ORDER BY site") == [("x", 3.0), ("y", 2.0)]
    temps("b.csv", [("z", "2026-06-01T00:00:00Z", 4.0), ("z", "2026-06-01T00:00:00Z", 5.0)])
    assert run_now("temps")["status"] == "succeeded"
    assert rows("SELECT site, v FROM raw.temps WHERE site = 'z'") == [("z", 5.0)]


def test_backfill_without_a_key_replaces_the_range(declare, tmp_path, run_now, rows):
    """Rows without a key have no identity: a backfill replaces the batch rows of its
    range with what it fetched, so backfilling the same range twice keeps one copy and
    rows outside the range stay."""
    folder = tmp_path / "r"
    folder.mkdir()
    declare(
        name="readings",
        type="file",
        kind="time_series",
        options={"path": f"{folder}/*.csv"},
        columns=[{"name": "at", "type": "timestamptz"}, {"name": "v", "type": "double precision"}],
        time_column="at",
    )  # no key
    (folder / "a.csv").write_text(
        "at,v\n2026-04-30T00:00:00Z,0\n2026-05-01T00:00:00Z,1\n2026-05-02T00:00:00Z,2\n"
    )
    assert run_now("readings")["rows_loaded"] == 3
    (folder / "a.csv").write_text(
        "at,v\n2026-04-30T00:00:00Z,9\n2026-05-01T00:00:00Z,1.5\n2026-05-03T00:00:00Z,3\n"
    )
    window = {"from": "2026-05-01T00:00:00Z", "to": "2026-05-31T00:00:00Z"}
    for _ in range(2):
        run = run_now("readings", "backfill", window)
        assert run["status"] == "succeeded", run["error"]
        assert rows("SELECT v FROM raw.readings ORDER BY at") == [(0.0,), (1.5,), (3.0,)]

"""Dataset kinds: point_in_time keeps SCD-2 versions with a current view and as-of queries;
time_series is partitioned by month with retention; instantaneous keeps history."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from batch import versions
from batch.partitions import drop_expired
from cxd.catalog import get_source


@pytest.fixture
def shops(declare, tmp_path):
    folder = tmp_path / "shops"
    folder.mkdir()
    declare(
        name="shops",
        type="file",
        kind="point_in_time",
        options={"path": f"{folder}/*.csv"},
        columns=[{"name": "shop", "type": "text"}, {"name": "city", "type": "text"}],
        key=["shop"],
    )

    def snapshot(n: int, body: str) -> None:
        (folder / f"{n:03d}.csv").write_text("shop,city\n" + body)
        for old in folder.glob("*.csv"):
            if old.name != f"{n:03d}.csv":
                old.unlink()

    return snapshot


def test_point_in_time_as_of_after_inserts_updates_and_deletes(shops, run_now, stores, rows):
    instants = []
    snapshots = [
        "a,Oslo\nb,Rome\n",
        "a,Oslo\nb,Milan\nc,Lima\n",  # b moved, c opened
        "a,Bergen\nc,Lima\n",  # a moved, b closed
        "a,Bergen\nb,Turin\nc,Lima\n",  # b reopened
    ]
    for n, body in enumerate(snapshots):
        shops(n, body)
        run = run_now("shops", "full")
        assert run["status"] == "succeeded", run["error"]
        time.sleep(0.01)
        instants.append(datetime.now(UTC))
        time.sleep(0.01)
    expected = [
        [("a", "Oslo"), ("b", "Rome")],
        [("a", "Oslo"), ("b", "Milan"), ("c", "Lima")],
        [("a", "Bergen"), ("c", "Lima")],
        [("a", "Bergen"), ("b", "Turin"), ("c", "Lima")],
    ]
    for at, want in zip(instants, expected, strict=True):
        got = [(r["shop"], r["city"]) for r in versions.as_of(stores.db, "shops", at)]
        assert got == want, at
    assert versions.as_of(stores.db, "shops", datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert rows('SELECT shop, city FROM raw."shops_current" ORDER BY shop') == expected[-1]
    history = versions.history(stores.db, "shops", shop="b")
    assert [h["city"] for h in history] == ["Rome", "Milan", "Turin"]
    assert history[0]["_valid_to"] == history[1]["_valid_from"]
    assert history[1]["_valid_to"] is not None and history[2]["_valid_to"] is None
    # the same snapshot again changes nothing
    before = rows("SELECT count(*), max(_seq) FROM raw.shops")
    assert run_now("shops", "full")["rows_loaded"] == 0
    assert rows("SELECT count(*), max(_seq) FROM raw.shops") == before


def test_incremental_point_in_time_does_not_close_absent_entities(shops, run_now, rows):
    shops(0, "a,Oslo\nb,Rome\n")
    run_now("shops")
    shops(1, "b,Milan\n")
    assert run_now("shops")["status"] == "succeeded"
    assert rows('SELECT shop, city FROM raw."shops_current" ORDER BY shop') == [
        ("a", "Oslo"),
        ("b", "Milan"),
    ]


def test_time_series_is_partitioned_by_month_with_retention(
    declare, tmp_path, run_now, rows, stores
):
    folder = tmp_path / "t"
    folder.mkdir()
    declare(
        name="temps",
        type="file",
        kind="time_series",
        options={"path": f"{folder}/*.csv", "retention": "365d"},
        columns=[{"name": "site", "type": "text"}, {"name": "at", "type": "timestamptz"},
                 {"name": "v", "type": "double precision"}],
        key=["site", "at"],
        time_column="at",
    )  # fmt: skip
    (folder / "a.csv").write_text(
        "site,at,v\nx,2026-01-31T23:30:00Z,1\nx,2026-02-01T00:00:00Z,2\nx,2026-03-15T00:00:00Z,3\n"
    )
    assert run_now("temps")["status"] == "succeeded"
    parts = rows(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'raw.temps'::regclass ORDER BY 1"
    )
    assert parts == [("temps_p2026_01",), ("temps_p2026_02",), ("temps_p2026_03",)]
    assert rows("SELECT count(*) FROM raw.temps_p2026_02") == [(1,)]
    dropped = drop_expired(
        stores.db, get_source(stores.db, "temps"), now=datetime(2027, 2, 15, tzinfo=UTC)
    )
    assert dropped == ["temps_p2026_01"]
    assert rows("SELECT v FROM raw.temps ORDER BY at") == [(2.0,), (3.0,)]


def test_instantaneous_keeps_history(declare, stores, rows):
    from batch.load import load_rows

    spec = declare(
        name="level",
        type="webhook",
        kind="instantaneous",
        columns=[{"name": "gauge", "type": "text"}, {"name": "at", "type": "timestamptz"},
                 {"name": "m", "type": "double precision"}],
        key=["gauge"],
        time_column="at",
    )  # fmt: skip
    load_rows(
        stores.db,
        spec,
        [{"gauge": "g1", "at": "2026-05-05T10:00:00Z", "m": 1.5}],
        stream_ids=["1-0"],
        stream_watermark="1-0",
    )
    load_rows(
        stores.db,
        spec,
        [{"gauge": "g1", "at": "2026-05-05T10:05:00Z", "m": 1.7}],
        stream_ids=["2-0"],
        stream_watermark="2-0",
    )
    assert rows("SELECT m, _stream_id FROM raw.level ORDER BY at") == [(1.5, "1-0"), (1.7, "2-0")]
    assert rows("SELECT stream_id FROM cxd.watermarks WHERE dataset = 'level'") == [("2-0",)]

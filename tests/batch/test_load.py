"""The load path: values reach raw exactly as ingested, and a load made of many slices
(typed and COPYed in a pipeline) still quarantines the right lines and keeps the last
row per key, whichever slice a problem is in."""

from __future__ import annotations

import pytest

PLUGIN = """
import io
import pandas as pd
from plugins.file import FileSource

class SmallChunks(FileSource):
    def ingest(self, payload):
        return pd.read_csv(io.BytesIO(payload.content), dtype=str, keep_default_na=False,
                           chunksize=3)
"""


@pytest.fixture
def readings(declare, plugin_file, tmp_path):
    """A time series read by a plugin that yields 3-row slices of its CSV files."""
    plugin_file("small_chunks", PLUGIN)
    folder = tmp_path / "r"
    folder.mkdir()

    def make(checks=()):
        return declare(
            name="readings",
            type="python",
            plugin="small_chunks",
            kind="time_series",
            options={"path": f"{folder}/*.csv", "settle": "0s"},
            columns=[
                {"name": "site", "type": "text"},
                {"name": "at", "type": "timestamptz"},
                {"name": "n", "type": "bigint"},
                {"name": "note", "type": "text"},
            ],
            key=["site", "at"],
            time_column="at",
            checks=list(checks),
        )

    make.folder = folder
    return make


def test_text_values_reach_raw_exactly(declare, rows, stores):
    from batch.load import load_rows

    spec = declare(
        name="notes",
        type="webhook",
        kind="time_series",
        columns=[
            {"name": "id", "type": "bigint"},
            {"name": "at", "type": "timestamptz"},
            {"name": "body", "type": "text"},
            {"name": "meta", "type": "jsonb"},
        ],
        key=["id"],
        time_column="at",
    )
    bodies = ["tab\there", "two\nlines", "cr\r", "back\\slash", "\\N", "", None, "é ✓"]
    records = [
        {"id": i, "at": "2026-05-05T10:00:00Z", "body": b, "meta": {"k": b}}
        for i, b in enumerate(bodies)
    ]
    assert load_rows(stores.db, spec, records) == len(bodies)
    assert rows("SELECT body, meta->>'k' FROM raw.notes ORDER BY id") == [(b, b) for b in bodies]


def test_refused_values_in_any_slice_are_quarantined_by_line(readings, run_now, rows, stores):
    readings()
    lines = [f"s{i},2026-05-05T10:{i:02d}:00Z,{i},ok" for i in range(12)]
    lines[1] = "s1,2026-05-05T10:01:00Z,1x,bad n in the first slice"
    lines[7] = "s7,not a time,7,bad time in the third slice"
    lines[11] = "s11,2026-05-05T10:11:00Z,99999999999999999999,bad n in the last slice"
    (readings.folder / "a.csv").write_text("site,at,n,note\n" + "\n".join(lines) + "\n")
    run = run_now("readings")
    assert run["status"] == "succeeded", run["error"]
    assert (run["rows_fetched"], run["rows_loaded"], run["rows_quarantined"]) == (12, 9, 3)
    assert rows("SELECT n FROM raw.readings ORDER BY n") == [
        (n,) for n in (0, 2, 3, 4, 5, 6, 8, 9, 10)
    ]
    bad = rows(
        "SELECT line, check_name FROM cxd.quarantine WHERE run_id = %s ORDER BY line",
        (run["id"],),
    )
    assert bad == [(3, "type:n"), (9, "type:at"), (13, "type:n")]


def test_a_key_repeated_in_a_later_slice_keeps_the_last_row(readings, run_now, rows):
    readings()
    (readings.folder / "a.csv").write_text(
        "site,at,n,note\n"
        "a,2026-05-05T10:00:00Z,1,first\n"
        "b,2026-05-05T10:00:00Z,2,first\n"
        "c,2026-05-05T10:00:00Z,3,first\n"
        "d,2026-05-05T10:00:00Z,4,first\n"
        "a,2026-05-05T10:00:00Z,10,again\n"
        "e,2026-05-05T10:00:00Z,5,first\n"
        "f,2026-05-05T10:00:00Z,6,first\n"
    )
    run = run_now("readings")
    assert run["status"] == "succeeded", run["error"]
    assert rows("SELECT site, n, note FROM raw.readings ORDER BY site") == [
        ("a", 10, "again"),
        ("b", 2, "first"),
        ("c", 3, "first"),
        ("d", 4, "first"),
        ("e", 5, "first"),
        ("f", 6, "first"),
    ]

"""Reprocess of a dataset without a key: the rows a run loaded are replaced by what the
current ingest code makes of that run's archived payloads, other runs' rows stay as they
are, and the rewritten rows get new ``_seq`` values so readers of changes see them."""

from __future__ import annotations

import pytest

from serving.changes import encode_cursor
from tests.batch.growing import growing_plugin


def growing_source(declare, plugin_file, tmp_path, key: list[str] | None = None):
    """A dataset fed by a growing CSV; ``source.code(python)`` replaces the line of
    ingest code that cleans the frame; ``source.add(rows)`` appends to the file."""
    path = tmp_path / "nums.csv"
    path.write_text("")

    class Source:
        @staticmethod
        def code(line: str = "pass") -> None:
            plugin_file("growing", growing_plugin(["id", "v", "at"], line))

        @staticmethod
        def add(*rows: tuple[int, float]) -> None:
            with path.open("a") as fh:
                fh.writelines(f"{i},{v},2026-05-05T00:00:{i:02d}Z\n" for i, v in rows)

    Source.code()
    declare(
        name="nums",
        type="python",
        plugin="growing",
        kind="time_series",
        options={"path": str(path)},
        columns=[
            {"name": "id", "type": "integer"},
            {"name": "v", "type": "double precision"},
            {"name": "at", "type": "timestamptz"},
        ],
        time_column="at",
        **({"key": key} if key else {}),
    )
    return Source


@pytest.fixture
def source(declare, plugin_file, tmp_path):
    """The growing CSV as a dataset without a key."""
    return growing_source(declare, plugin_file, tmp_path)


@pytest.fixture
def keyed_source(declare, plugin_file, tmp_path):
    """The growing CSV as a dataset keyed by ``id``: a later line with the same id
    updates the row."""
    return growing_source(declare, plugin_file, tmp_path, key=["id"])


def _raw(rows):
    return rows("SELECT _run_id, id, v, _seq FROM raw.nums ORDER BY id, _seq")


def test_reprocess_replaces_the_runs_rows_and_nothing_else(source, run_now, rows, client, auth):
    source.add((1, 1.0), (2, 2.0), (3, 3.0))
    first = run_now("nums")
    source.add((4, 4.0), (5, 5.0))
    second = run_now("nums")
    assert (first["rows_loaded"], second["rows_loaded"]) == (3, 2)
    before = _raw(rows)
    seq_before = max(r[3] for r in before)
    untouched = [r for r in before if r[0] == second["id"]]

    source.code('frame["v"] = frame["v"] * 10')  # the ingest code changed
    redo = run_now("nums", "reprocess", {"run": first["id"]})
    assert redo["status"] == "succeeded", redo["error"]
    after = _raw(rows)
    assert [r[:3] for r in after] == [
        (first["id"], 1, 10.0), (first["id"], 2, 20.0), (first["id"], 3, 30.0),
        (second["id"], 4, 4.0), (second["id"], 5, 5.0),
    ]  # fmt: skip
    assert [r for r in after if r[0] == second["id"]] == untouched  # same rows, same _seq
    assert all(r[3] > seq_before for r in after if r[0] == first["id"])

    # readers following changes get exactly the rewritten rows
    since = encode_cursor(seq_before, (0, 0))
    r = client.get(f"/api/datasets/nums/changes?since={since}", headers=auth("read"))
    assert r.status_code == 200, r.get_json()
    assert sorted((c["_run_id"], c["id"], c["v"]) for c in r.get_json()["rows"]) == [
        (first["id"], 1, 10.0), (first["id"], 2, 20.0), (first["id"], 3, 30.0)
    ]  # fmt: skip

    # the same reprocess again leaves the same rows (no duplicates)
    run_now("nums", "reprocess", {"run": first["id"]})
    assert [r[:3] for r in _raw(rows)] == [r[:3] for r in after]

    # ingest code that now drops the whole payload: the run's rows go too
    source.code("frame = frame[frame['id'] > 3]")
    gone = run_now("nums", "reprocess", {"run": first["id"]})
    assert gone["status"] == "succeeded", gone["error"]
    assert [r[:3] for r in _raw(rows)] == [(second["id"], 4, 4.0), (second["id"], 5, 5.0)]

    # every run at once
    source.code('frame["v"] = frame["v"] * 10')
    assert run_now("nums", "reprocess")["status"] == "succeeded"
    assert [r[1:3] for r in _raw(rows)] == [(i, i * 10.0) for i in range(1, 6)]


def test_reprocess_skips_runs_whose_rows_are_not_in_raw(source, run_now, rows):
    """A failed run loaded nothing (the next run fetched its data again) and a full
    refresh replaced every earlier run's rows: re-ingesting those would load rows twice."""
    source.add((1, 1.0), (2, 2.0))
    first = run_now("nums")
    source.add((3, 3.0))
    source.code("raise RuntimeError('a bug in this version of the ingest code')")
    failed = run_now("nums")
    assert failed["status"] == "failed"
    source.code()  # fixed: the next run fetches the same rows again from the cursor
    third = run_now("nums")
    assert third["rows_loaded"] == 1

    assert run_now("nums", "reprocess")["status"] == "succeeded"
    assert [r[:2] for r in _raw(rows)] == [(first["id"], 1), (first["id"], 2), (third["id"], 3)]
    refused = run_now("nums", "reprocess", {"run": failed["id"]})
    assert refused["status"] == "failed"
    assert f"run {failed['id']} of 'nums' failed" in refused["error"]

    full = run_now("nums", "full")
    assert full["status"] == "succeeded", full["error"]
    assert run_now("nums", "reprocess")["status"] == "succeeded"
    assert [r[:2] for r in _raw(rows)] == [(full["id"], 1), (full["id"], 2), (full["id"], 3)]
    refused = run_now("nums", "reprocess", {"run": first["id"]})
    assert refused["status"] == "failed"
    assert f"superseded by the full refresh run {full['id']}" in refused["error"]


def test_reprocess_of_an_older_run_keeps_what_later_runs_wrote(keyed_source, run_now, rows):
    """With a key, a reprocessed run rewrites the keys it wrote and no later run has
    written since; reprocessing every run replays them in order, so the last one wins."""
    keyed_source.add((1, 1.0), (2, 2.0), (3, 3.0))
    first = run_now("nums")
    keyed_source.add((1, 5.0), (4, 4.0))  # the second run updates id 1
    second = run_now("nums")
    assert (first["rows_loaded"], second["rows_loaded"]) == (3, 2)

    keyed_source.code('frame["v"] = frame["v"] * 10')
    redo = run_now("nums", "reprocess", {"run": first["id"]})
    assert redo["status"] == "succeeded", redo["error"]
    assert [r[:3] for r in _raw(rows)] == [
        (second["id"], 1, 5.0), (first["id"], 2, 20.0), (first["id"], 3, 30.0),
        (second["id"], 4, 4.0),
    ]  # fmt: skip

    assert run_now("nums", "reprocess")["status"] == "succeeded"
    assert [r[:3] for r in _raw(rows)] == [
        (second["id"], 1, 50.0), (first["id"], 2, 20.0), (first["id"], 3, 30.0),
        (second["id"], 4, 40.0),
    ]  # fmt: skip


def test_an_edited_plugin_file_is_used_without_a_restart(source, run_now, rows, settings):
    """The ingest code is read again when its file changes: a long-lived process (a
    worker, cxd-ingest) reprocesses with the code on disk, not the code it first loaded."""
    source.add((1, 1.0), (2, 2.0))
    first = run_now("nums")
    plugin = settings.plugin_dir / "growing.py"
    plugin.write_text(growing_plugin(["id", "v", "at"], 'frame["v"] = frame["v"] + 100'))
    redo = run_now("nums", "reprocess", {"run": first["id"]})
    assert redo["status"] == "succeeded", redo["error"]
    assert [r[1:3] for r in _raw(rows)] == [(1, 101.0), (2, 102.0)]

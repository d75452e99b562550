"""Run records: statuses, counts and durations; an unreachable source fails readably and
leaves raw untouched; transient fetch errors are retried by rq with backoff."""

from __future__ import annotations

import socket

import pytest

from batch.jobs import enqueue_run

FLAKY = """
import json, os
from plugins.base import Payload, SourcePlugin
from plugins.exceptions import FetchError

class Flaky(SourcePlugin):
    def fetch(self, cursor):
        marker = self.options["marker"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise FetchError("the API answered 503")
        yield Payload(content=b'[{"k": 1, "at": "2026-05-05T00:00:00Z"}]', media_type="application/json")

    def ingest(self, payload):
        return json.loads(payload.content)
"""

URL = """
import urllib.request
from plugins.base import Payload, SourcePlugin

class Remote(SourcePlugin):
    def fetch(self, cursor):
        with urllib.request.urlopen(self.options["url"], timeout=5) as r:
            yield Payload(content=r.read())

    def ingest(self, payload):
        return []
"""

COLUMNS = [{"name": "k", "type": "integer"}, {"name": "at", "type": "timestamptz"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_source_fails_readably_and_raw_is_untouched(
    declare, plugin_file, run_now, rows, stores, tmp_path
):
    from batch.load import load_rows

    plugin_file("remote", URL)
    spec = declare(name="remote", type="python", plugin="remote", options={"url": f"http://127.0.0.1:{_free_port()}/data"},
                   columns=COLUMNS, key=["k"], time_column="at")  # fmt: skip
    load_rows(stores.db, spec, [{"k": 7, "at": "2026-05-01T00:00:00Z"}])
    before = rows("SELECT k, _seq FROM raw.remote")
    run = run_now("remote")
    assert run["status"] == "failed"
    assert run["error_step"] == "fetch"
    assert "the source is unreachable" in run["error"] and "refused" in run["error"].lower()
    assert "'remote'" in run["error"] and f"run {run['id']}" in run["error"]
    assert rows("SELECT k, _seq FROM raw.remote") == before
    assert run["finished_at"] is not None and run["duration_ms"] is not None


def test_run_record_has_statuses_counts_and_durations(declare, tmp_path, run_now):
    (tmp_path / "a.csv").write_text(
        "k,at\n1,2026-05-05T00:00:00Z\n2,2026-05-05T01:00:00Z\nx,2026-05-05T02:00:00Z\n"
    )
    declare(name="nums", type="file", options={"path": str(tmp_path / "a.csv")}, columns=COLUMNS,
            key=["k"], time_column="at")  # fmt: skip
    run = run_now("nums")
    assert run["status"] == "succeeded"
    assert (run["rows_fetched"], run["rows_loaded"], run["rows_quarantined"]) == (3, 2, 1)
    assert set(run["durations"]) >= {"setup", "fetch", "ingest"}
    steps = {k: v for k, v in run["durations"].items() if not k.startswith("load_")}
    assert run["duration_ms"] >= sum(steps.values()) - 5
    assert set(run["durations"]) >= {"load_typing", "load_copy", "load_merge"}
    assert run["started_at"] <= run["finished_at"]
    assert [e["message"] for e in run["log"]][0] == "fetched"


def test_transient_fetch_error_is_retried_by_rq(
    declare, plugin_file, tmp_path, stores, run_jobs, rows, monkeypatch
):
    monkeypatch.setenv("CXD_RETRY_BACKOFF", "0,0")
    plugin_file("flaky", FLAKY)
    declare(name="flaky", type="python", plugin="flaky", options={"marker": str(tmp_path / "m")},
            columns=COLUMNS, key=["k"], time_column="at")  # fmt: skip
    run_id = enqueue_run(stores, "flaky")
    run_jobs()
    run = stores.db.fetchone("SELECT * FROM cxd.runs WHERE id = %s", (run_id,))
    assert run["status"] == "succeeded", run["error"]
    assert run["attempts"] == 2
    assert any(e["message"] == "transient error, retrying" for e in run["log"])
    assert rows("SELECT k FROM raw.flaky") == [(1,)]


@pytest.mark.parametrize("mode", ["bogus"])
def test_unknown_mode_is_refused(declare, tmp_path, stores, mode):
    from cxd.errors import BadInput

    declare(name="nums", type="file", options={"path": str(tmp_path / "a.csv")}, columns=COLUMNS,
            key=["k"], time_column="at")  # fmt: skip
    with pytest.raises(BadInput, match="mode must be one of"):
        enqueue_run(stores, "nums", mode)


def test_new_columns_are_added_and_a_type_change_fails_touching_nothing(
    declare, tmp_path, run_now, rows, stores
):
    from cxd.catalog import parse_source, save_source

    path = str(tmp_path / "*.csv")
    (tmp_path / "a.csv").write_text("k,at,note\n1,2026-05-05T00:00:00Z,hi\n")
    declare(name="nums", type="file", options={"path": path}, columns=COLUMNS, key=["k"],
            time_column="at")  # fmt: skip
    assert run_now("nums")["status"] == "succeeded"
    note = {"name": "note", "type": "text"}
    declare(name="nums", type="file", options={"path": path}, columns=[*COLUMNS, note],
            key=["k"], time_column="at")  # fmt: skip
    assert rows("SELECT k, note FROM raw.nums") == [(1, None)]
    (tmp_path / "b.csv").write_text("k,at,note\n2,2026-05-06T00:00:00Z,new\n")
    assert run_now("nums")["status"] == "succeeded"
    assert rows("SELECT k, note FROM raw.nums ORDER BY k") == [(1, None), (2, "new")]

    # a REST edit changes k's type: the next run fails at setup and raw stays as it was
    changed = parse_source({"name": "nums", "type": "file", "options": {"path": path},
                            "columns": [{"name": "k", "type": "text"}, COLUMNS[1], note],
                            "key": ["k"], "time_column": "at"})  # fmt: skip
    save_source(stores.db, changed)
    (tmp_path / "c.csv").write_text("k,at,note\nx,2026-05-07T00:00:00Z,z\n")
    run = run_now("nums")
    assert run["status"] == "failed" and run["error_step"] == "setup"
    assert "column 'k' is integer in raw but declared text" in run["error"]
    assert rows("SELECT k, note FROM raw.nums ORDER BY k") == [(1, None), (2, "new")]

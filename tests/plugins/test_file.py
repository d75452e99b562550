"""The local-file source on a real watched folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from openpyxl import Workbook

from tests.plugins.brokers import eventually, free_port
from tests.plugins.sources import declare, process_env, raw_rows, run, stop_process

COLUMNS = [
    {"name": "sensor", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "value", "type": "double precision"},
]


def source(inbox, **options):
    return {
        "name": "readings",
        "type": "file",
        "kind": "time_series",
        "options": {"dir": str(inbox), "glob": "*", "settle": "0.3s", **options},
        "columns": COLUMNS,
        "key": ["sensor", "at"],
        "time_column": "at",
    }


def values(stores):
    return [(r["sensor"], r["value"]) for r in raw_rows(stores, "readings", "sensor, at")]


def write_all_formats(inbox):
    (inbox / "a.csv").write_text("sensor,at,value\ns1,2026-05-05T10:00:00Z,1.5\n")
    (inbox / "b.json").write_text(
        json.dumps([{"sensor": "s2", "at": "2026-05-05T10:00:00Z", "value": 2}])
    )
    (inbox / "c.ndjson").write_text(
        '{"sensor": "s3", "at": "2026-05-05T10:00:00Z", "value": 3}\n'
        '{"sensor": "s3", "at": "2026-05-05T11:00:00Z", "value": 3.5}\n'
    )
    book = Workbook()
    book.active.append(["sensor", "at", "value"])
    book.active.append(["s4", "2026-05-05T10:00:00Z", 4.25])
    book.save(inbox / "d.xlsx")


def test_every_format_loads_once_and_moves_to_done(stores, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_all_formats(inbox)
    declare(stores, source(inbox, after="move"))
    first = run(stores, "readings")
    assert first["status"] == "succeeded", first["error"]
    assert values(stores) == [("s1", 1.5), ("s2", 2.0), ("s3", 3.0), ("s3", 3.5), ("s4", 4.25)]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        "a.csv",
        "b.json",
        "c.ndjson",
        "d.xlsx",
    ]

    assert run(stores, "readings")["rows_fetched"] == 0
    (inbox / "e.csv").write_text("sensor,at,value\ns5,2026-05-05T10:00:00Z,5\n")
    third = run(stores, "readings")
    assert third["rows_fetched"] == 1
    assert ("s5", 5.0) in values(stores)
    assert (inbox / "done" / "e.csv").exists()


def test_keep_leaves_files_and_loads_a_changed_file_again(stores, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = inbox / "a.csv"
    data.write_text("sensor,at,value\ns1,2026-05-05T10:00:00Z,1\n")
    declare(stores, source(inbox, after="keep"))
    assert run(stores, "readings")["rows_fetched"] == 1
    assert run(stores, "readings")["rows_fetched"] == 0  # same path, size, mtime and hash
    assert data.exists() and not (inbox / "done").exists()
    with data.open("a") as f:
        f.write("s1,2026-05-05T11:00:00Z,2\n")
    assert run(stores, "readings")["rows_fetched"] == 2
    assert values(stores) == [("s1", 1.0), ("s1", 2.0)]


def test_a_growing_file_waits_until_it_stops(stores, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "done.csv").write_text("sensor,at,value\ns1,2026-05-05T10:00:00Z,1\n")
    growing = inbox / "growing.csv"
    growing.write_text("sensor,at,value\ns2,2026-05-05T10:00:00Z,1\n")

    stop = threading.Event()

    def keep_writing():
        minute = 0
        while not stop.wait(0.1):
            minute += 1
            with growing.open("a") as f:
                f.write(f"s2,2026-05-05T11:{minute:02d}:00Z,{minute}\n")

    writer = threading.Thread(target=keep_writing)
    writer.start()
    declare(stores, source(inbox, settle="0.5s"))
    try:
        first = run(stores, "readings")
    finally:
        stop.set()
        writer.join()
    assert first["rows_fetched"] == 1  # only the finished file; the growing one waits
    lines = len(growing.read_text().splitlines()) - 1
    assert lines > 3
    second = run(stores, "readings")
    assert second["rows_fetched"] == lines  # the whole file, once it stopped growing
    assert len([s for s, _ in values(stores) if s == "s2"]) == lines


def test_a_file_that_fails_parsing_is_quarantined_and_the_rest_load(stores, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "good.csv").write_text("sensor,at,value\ns1,2026-05-05T10:00:00Z,1\n")
    (inbox / "broken.json").write_text('[{"sensor": "s2", "at": ')
    (inbox / "short.csv").write_text("sensor,value\ns3,3\n")
    declare(stores, source(inbox, after="move"))
    result = run(stores, "readings")
    assert result["status"] == "succeeded", result["error"]
    assert values(stores) == [("s1", 1.0)]
    bad = inbox / "quarantine"
    assert sorted(p.name for p in bad.iterdir()) == [
        "broken.json",
        "broken.json.reason",
        "short.csv",
        "short.csv.reason",
    ]
    assert "not valid json" in (bad / "broken.json.reason").read_text()
    assert "missing column(s) at" in (bad / "short.csv.reason").read_text()
    reasons = {
        e.get("payload", "").rsplit("/", 1)[-1]: e["reason"] for e in result["log"] if "reason" in e
    }
    assert set(reasons) == {"broken.json", "short.csv"}
    assert "missing column(s) at" in reasons["short.csv"]
    assert (inbox / "done" / "good.csv").exists()
    # fixing the file and putting it back loads it
    (inbox / "short.csv").write_text("sensor,at,value\ns3,2026-05-05T10:00:00Z,3\n")
    assert run(stores, "readings")["rows_fetched"] == 1
    assert ("s3", 3.0) in values(stores)


def test_path_glob_still_works(stores, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "x.csv").write_text("sensor,at,value\ns1,2026-05-05T10:00:00Z,1\n")
    (folder / "x.txt").write_text("not matched")
    declare(
        stores,
        {**source(folder), "options": {"path": f"{folder}/*.csv", "format": "csv", "settle": 0}},
    )
    assert run(stores, "readings")["rows_fetched"] == 1
    assert (folder / "x.csv").exists()


def loaded(stores):
    """The rows loaded so far ([] before the first run registered the dataset)."""
    known = stores.db.fetchone("SELECT 1 AS ok FROM cxd.datasets WHERE name = 'readings'")
    return values(stores) if known else []


def _start(args, env, log):
    return subprocess.Popen(args, env=env, stdout=log, stderr=log)


def test_cxd_ingest_watches_the_folder_and_loads_dropped_files(stores, settings, tmp_path):
    """No `cxd run`: cxd-ingest sees each file once it stopped growing and enqueues a run,
    an rq worker loads it; a bad file is quarantined with the reason."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings.config_file.write_text(
        yaml.safe_dump({"sources": [source(inbox, after="move", settle="0.5s")]})
    )
    env = process_env(settings, CXD_INGEST_PORT=str(free_port()), CXD_INGEST_WORKERS="1")
    bindir = Path(sys.executable).parent
    log = open(tmp_path / "processes.log", "wb")  # noqa: SIM115
    ingest = _start([str(bindir / "cxd-ingest")], env, log)
    worker = _start([str(bindir / "cxd"), "worker"], env, log)
    try:
        with open(inbox / "first.csv", "w") as growing:  # written in two steps
            growing.write("sensor,at,value\ns1,2026-05-05T10:00:00Z,1.5\n")
            growing.flush()
            time.sleep(0.2)
            growing.write("s1,2026-05-05T11:00:00Z,2.5\n")
        eventually(lambda: len(loaded(stores)) == 2, timeout=60, what="the first file's rows")
        assert values(stores) == [("s1", 1.5), ("s1", 2.5)]
        eventually(lambda: (inbox / "done" / "first.csv").exists(), what="first.csv in done/")

        (inbox / "second.ndjson").write_text(
            '{"sensor": "s2", "at": "2026-05-05T10:00:00Z", "value": 7}\n'
        )
        (inbox / "broken.json").write_text("[{oops")
        eventually(lambda: len(loaded(stores)) == 3, timeout=30, what="the second file's row")
        reason = eventually(
            lambda: (
                (inbox / "quarantine" / "broken.json.reason").exists()
                and (inbox / "quarantine" / "broken.json.reason").read_text()
            ),
            timeout=30,
            what="broken.json quarantined",
        )
        assert "broken.json" in reason
        watched = stores.db.fetchall(
            "SELECT slot FROM cxd.runs WHERE dataset = 'readings' ORDER BY id"
        )
        assert watched and all(r["slot"].startswith("watch:") for r in watched)
        assert values(stores) == [("s1", 1.5), ("s1", 2.5), ("s2", 7.0)]  # nothing twice
    finally:
        stop_process(ingest)
        stop_process(worker)
        log.close()

"""Archive and reprocess: every payload is kept compressed before ingest, and ingest can be
re-run from it without the source, idempotently, rewriting only what changed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from batch import archive
from batch.jobs import execute_run
from batch.runs import create_run

PLUGIN = """
import json
from plugins.base import Payload, SourcePlugin

class Items(SourcePlugin):
    def fetch(self, cursor):
        with open(self.options["path"], "rb") as fh:
            yield Payload(content=fh.read(), name="items.json", media_type="application/json")

    def ingest(self, payload):
        return [
            {"id": r["id"], "price": PRICE, "currency": r["cur"]}
            for r in json.loads(payload.content)
        ]
"""


def items_plugin(plugin_file, price_expr: str) -> None:
    plugin_file("items", PLUGIN.replace("PRICE", price_expr))


def declare_items(declare, tmp_path, **extra):
    return declare(
        name="items",
        type="python",
        plugin="items",
        kind="time_series",
        options={"path": str(tmp_path / "items.json"), **extra},
        columns=[
            {"name": "id", "type": "integer"},
            {"name": "price", "type": "numeric"},
            {"name": "currency", "type": "text"},
            {"name": "at", "type": "timestamptz"},
        ],
        key=["id"],
        time_column="at",
    )


def write_items(tmp_path, records) -> bytes:
    body = json.dumps(records).encode()
    (tmp_path / "items.json").write_bytes(body)
    return body


def test_every_payload_is_archived_compressed_before_ingest(
    declare, plugin_file, tmp_path, run_now, stores
):
    plugin_file("items", PLUGIN.replace("PRICE", "1 / 0"))  # ingest fails
    declare_items(declare, tmp_path)
    body = write_items(tmp_path, [{"id": 1, "price": 2, "cur": "USD"}])
    run = run_now("items")
    assert run["status"] == "failed" and run["error_step"] == "ingest"
    assert "ZeroDivisionError" in run["error"] and f"run {run['id']}" in run["error"]
    [entry] = archive.entries(stores.db, "items")
    assert entry["run_id"] == run["id"] and entry["name"] == "items.json"
    assert entry["size"] == len(body)
    path = Path(entry["path"])
    assert path.is_relative_to(stores.settings.home / "archive")
    assert gzip.decompress(path.read_bytes()) == body


def test_reprocess_rewrites_only_changed_rows_without_the_source(
    declare, plugin_file, tmp_path, run_now, stores, rows
):
    items_plugin(plugin_file, 'r["price"]')
    declare_items(declare, tmp_path)
    write_items(
        tmp_path,
        [{"id": i, "price": 10 + i, "cur": "EUR" if i % 2 else "USD"} for i in range(1, 7)],
    )
    # the time column is filled by ingest later; until then rows are quarantined as required
    first = run_now("items")
    assert first["status"] == "succeeded"
    assert first["rows_quarantined"] == 6

    plugin_file(
        "items",
        PLUGIN.replace("PRICE", 'r["price"]').replace(
            '"currency": r["cur"]}', '"currency": r["cur"], "at": "2026-05-05T00:00:00Z"}'
        ),
    )
    (tmp_path / "items.json").unlink()  # the source is gone: reprocess must not need it
    rerun = run_now("items", "reprocess", {"run": first["id"]})
    assert rerun["status"] == "succeeded", rerun["error"]
    assert rerun["rows_loaded"] == 6
    before = dict(rows("SELECT id, _seq FROM raw.items"))

    # new ingest code: EUR prices converted; only those rows change
    plugin_file(
        "items",
        PLUGIN.replace("PRICE", 'r["price"] * 2 if r["cur"] == "EUR" else r["price"]').replace(
            '"currency": r["cur"]}', '"currency": r["cur"], "at": "2026-05-05T00:00:00Z"}'
        ),
    )
    again = run_now("items", "reprocess", {"run": first["id"]})
    assert again["status"] == "succeeded" and again["rows_loaded"] == 3
    after = dict(rows("SELECT id, _seq FROM raw.items"))
    changed = {i for i in before if before[i] != after[i]}
    assert changed == {1, 3, 5}
    assert rows("SELECT id, price FROM raw.items ORDER BY id") == [
        (1, 22), (2, 12), (3, 26), (4, 14), (5, 30), (6, 16)
    ]  # fmt: skip
    # idempotent: the same reprocess again changes nothing
    assert run_now("items", "reprocess", {"run": first["id"]})["rows_loaded"] == 0
    assert dict(rows("SELECT id, _seq FROM raw.items")) == after
    # and nothing was fetched: still one archived payload
    assert len(archive.entries(stores.db, "items")) == 1


def test_reprocess_with_nothing_archived_fails_clearly(declare, plugin_file, tmp_path, run_now):
    items_plugin(plugin_file, 'r["price"]')
    declare_items(declare, tmp_path)
    run = run_now("items", "reprocess", {"run": 999})
    assert run["status"] == "failed"
    assert "nothing archived for 'items' from run 999" in run["error"]


def test_archive_retention_prunes_files_and_index(declare, plugin_file, tmp_path, run_now, stores):
    items_plugin(plugin_file, 'r["price"]')
    declare_items(declare, tmp_path, archive_retention="1h")
    write_items(tmp_path, [{"id": 1, "price": 2, "cur": "USD"}])
    old = run_now("items")
    [entry] = archive.entries(stores.db, "items")
    stores.db.execute("UPDATE cxd.archive SET fetched_at = now() - interval '2 hours'")
    run_id = create_run(stores.db, "items")
    execute_run(stores, run_id)
    left = archive.entries(stores.db, "items")
    assert [e["run_id"] for e in left] == [run_id]
    assert not Path(entry["path"]).exists()
    assert old["id"] != run_id

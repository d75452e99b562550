"""scripts/manage.sh: tokens, status, and a metadata dump that restores what was lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cxd.auth import role_of
from cxd.catalog import get_source, parse_source, save_source
from query_router.saved import get_query, save_query

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CXD": f"{sys.executable} -m cxd.cli"}
    result = subprocess.run(
        ["scripts/manage.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_token_status_dump_and_restore(stores, tmp_path):
    spec = parse_source(
        {"name": "plant", "type": "webhook", "kind": "instantaneous", "key": ["sensor"],
         "columns": [{"name": "sensor", "type": "text"}, {"name": "level", "type": "double precision"}],
         "options": {"password": "s3cret-value"}}
    )  # fmt: skip
    save_source(stores.db, spec)
    save_query(stores, {"name": "levels", "sql": "SELECT sensor, level FROM plant"})
    token = manage("token", "analyst").strip().splitlines()[-1]
    assert role_of(stores.db, token) == "analyst"
    assert "cxd is not running" in manage("status") and "plant" in manage("status")

    dump = tmp_path / "meta.json"
    assert "1 sources" in manage("dump", str(dump))
    assert oct(dump.stat().st_mode & 0o777) == "0o600"  # it holds secrets
    assert json.loads(dump.read_text())["format"] == "cxd-metadata"

    stores.db.execute(
        "DELETE FROM cxd.sources; DELETE FROM cxd.saved_queries; DELETE FROM cxd.tokens"
    )
    assert "restored" in manage("restore", str(dump))
    restored = get_source(stores.db, "plant")
    assert restored.secrets == {"password": "s3cret-value"} and restored.key == ["sensor"]
    assert get_query(stores, "levels")["sql"] == "SELECT sensor, level FROM plant"
    assert role_of(stores.db, token) == "analyst"

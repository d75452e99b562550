"""Every command in docs/queries.md runs, against datasets in both layers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from query_router.saved import save_query

ROOT = Path(__file__).resolve().parents[2]


def commands() -> list[list[str]]:
    text = (ROOT / "docs" / "queries.md").read_text()
    return [shlex.split(line[2:]) for line in text.splitlines() if line.startswith("$ cxd ")]


def test_every_queries_doc_command_runs(corpus, tmp_path):
    save_query(
        corpus,
        {
            "name": "warm",
            "sql": "SELECT origin FROM weather WHERE temp > :t",
            "params": [{"name": "t", "type": "integer", "default": 12}],
        },
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    found = commands()
    assert len(found) >= 5
    outputs = []
    for cmd in found:
        result = subprocess.run(
            [sys.executable, "-m", "cxd.cli", *cmd[1:]],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (cmd, result.stderr)
        outputs.append(json.loads(result.stdout))
    assert outputs[0]["plan"] == "batch"
    assert outputs[0]["datasets"]["weather"]["time_range"][1] == "2026-05-05T10:30:00+00:00"
    assert {r["origin"] for r in outputs[1]["rows"]} == {"EWR"}
    assert outputs[2]["plan"] == "merge"
    assert {r["origin"] for r in outputs[3]["rows"]} == {"EWR", "LGA", "S1"}

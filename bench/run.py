"""Run bench scripts and write their tables to docs/benchmarks.md.

    .venv/bin/python bench/run.py                 # every bench/*.py
    .venv/bin/python bench/run.py startup         # just bench/startup.py

Each script prints markdown; this runner records the exact command, the machine and
the date above each table.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DOC = BENCH.parent / "docs" / "benchmarks.md"
SKIP = {"__init__", "common", "openloop", "run"}  # openloop: a client other scripts start


def main(names: list[str]) -> int:
    scripts = (
        [BENCH / f"{n}.py" for n in names]
        if names
        else sorted(p for p in BENCH.glob("*.py") if p.stem not in SKIP)
    )
    parts = [
        "# Benchmarks\n",
        "Made by `.venv/bin/python bench/run.py` on "
        f"{datetime.date.today()} ({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}).",
        "Each figure is measured against a ceiling taken in the same run; see each script's docstring.\n",
    ]
    failed = 0
    for script in scripts:
        cmd = [sys.executable, str(script.relative_to(BENCH.parent))]
        print(f"running {' '.join(cmd)}", flush=True)
        result = subprocess.run(cmd, cwd=BENCH.parent, capture_output=True, text=True)
        if result.returncode != 0:
            failed += 1
            parts.append(f"`{script.name}` failed:\n\n```\n{result.stderr[-2000:]}\n```\n")
            continue
        parts.append(
            f"Command: `.venv/bin/python bench/{script.name}`\n\n{result.stdout.strip()}\n"
        )
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

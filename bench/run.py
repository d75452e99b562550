"""Run bench scripts and write their tables to docs/benchmarks.md.

    .venv/bin/python bench/run.py                 # every bench/*.py
    .venv/bin/python bench/run.py startup         # just bench/startup.py

Each script prints markdown; this runner records the exact command, the machine and
the date above each table. Running some scripts replaces only their sections of the
page; the others keep their figures (and the page says which run made which).
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
    if names and DOC.exists():
        parts = _splice(DOC.read_text(), parts[3:], parts[1])
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")
    return 1 if failed else 0


def _splice(page: str, sections: list[str], made: str) -> list[str]:
    """``page`` with the sections of the scripts just run replaced (or added at the end)."""
    marker = "Command: `"
    head, *old = page.split(marker)
    kept = [marker + part.rstrip("\n") + "\n" for part in old]
    for section in sections:
        command = section.split("\n", 1)[0]
        at = [i for i, part in enumerate(kept) if part.split("\n", 1)[0] == command]
        section = f"{section.rstrip()}\n\n(this section: {made.removeprefix('Made by ')})\n"
        if at:
            kept[at[0]] = section
        else:
            kept.append(section)
    return [head.rstrip("\n") + "\n", *kept]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

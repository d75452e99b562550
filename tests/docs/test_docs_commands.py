"""Every command in docs/ and the README is executed by a test.

The rules a page follows (see docs/contributing-docs.md):

- A fenced ``sh`` block is run. All ``sh`` blocks of one page run in order as one bash
  script (``set -euo pipefail``) in a fresh working folder, with ``cxd`` on PATH and the
  test session's real Postgres and Redis in ``CXD_DATABASE_URL`` / ``CXD_REDIS_URL``.
- A block right after a line ``<!-- file: PATH -->`` is written to PATH in that folder
  before the next ``sh`` block runs (a ``cxd.yml``, a CSV, a plugin).
- A block whose info string is ``sh covered-by=TEST_FILE[,TEST_FILE]`` is run by those
  tests instead (the demo, the test suite itself); this test checks that they name each
  of its commands.
- A block whose info string is ``sh target-machine`` shows a command for a production
  machine (systemd, apt on a server); it is not run here, and the page must say so.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cxd.test_up import free_port, processes_of

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
FILE_MARK = re.compile(r"<!--\s*file:\s*(?P<path>\S+)\s*-->\s*$")


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """(info, body, file path or None) of every fenced block of ``page``, in order."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = FILE_MARK.search(before)
        indent = len(m.group("indent"))
        body = "\n".join(line[indent:] for line in m.group("body").splitlines()) + "\n"
        out.append((m.group("info").strip(), body, mark.group("path") if mark else None))
    return out


def runnable(page: Path) -> bool:
    return any(info == "sh" for info, _, _ in blocks(page))


def commands(body: str) -> list[str]:
    """The command lines of a shell block (continuations joined, comments dropped)."""
    joined = body.replace("\\\n", " ")
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_covered_and_target_blocks_are_accounted_for(page):
    for info, body, _ in blocks(page):
        words = info.split()
        if not words or words[0] != "sh" or len(words) == 1:
            continue
        extra = words[1]
        if extra.startswith("covered-by="):
            files = [ROOT / name for name in extra.split("=", 1)[1].split(",")]
            for test_file in files:
                assert test_file.is_file(), f"{page.name}: {test_file} does not exist"
            sources = " ".join(f.read_text() for f in files)
            for command in commands(body):
                words = shlex.split(command)
                # the program, and for cxd its subcommand, must be named by a covering test
                needles = words[:2] if words[0] == "cxd" and len(words) > 1 else words[:1]
                for needle in needles:
                    assert needle in sources, f"{page.name}: no covering test runs {command!r}"
        else:
            assert extra == "target-machine", f"{page.name}: unknown block kind {info!r}"
            assert "target machine" in page.read_text().lower() or "production machine" in (
                page.read_text().lower()
            ), f"{page.name}: say that its target-machine commands run on a production machine"


@pytest.mark.parametrize(
    "page", [p for p in pages() if runnable(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_page_commands_run(page, store_urls, stores, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    script = ["set -euo pipefail", 'trap "cxd down >/dev/null 2>&1 || true" EXIT']
    for info, body, path in blocks(page):
        if path:
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        elif info == "sh":
            script.append(body)
    db_url, redis_url = store_urls
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "CXD_DATABASE_URL": db_url,
        "CXD_REDIS_URL": redis_url,
        "CXD_HOME": str(tmp_path / "home"),
        "CXD_CONFIG": str(work / "cxd.yml"),
        "CXD_PLUGIN_DIR": str(work / "plugins.d"),
        "CXD_PORT": str(free_port()),
        "CXD_INGEST_PORT": str(free_port()),
    }
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    left = processes_of(tmp_path / "home")
    for line in left:  # never leak a worker onto the next test's Redis database
        os.kill(int(line.split(":")[0]), 9)
    assert not left, f"{page.name}: processes left running after the page's commands: {left}"
    assert result.returncode == 0, (
        f"{page.name}: commands failed (exit {result.returncode})\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )

"""``cxd up``: run the Procfile's processes in the foreground, like honcho, and stop them all
on Ctrl-C (or when one of them dies)."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

COLORS = ["\033[36m", "\033[33m", "\033[32m", "\033[35m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


def read_procfile(path: Path) -> list[tuple[str, str]]:
    """(name, command) for every line of a Procfile."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            name, _, cmd = line.partition(":")
            out.append((name.strip(), cmd.strip()))
    return out


def default_procfile() -> list[tuple[str, str]]:
    """The four processes of a cxd deployment (the repository's Procfile)."""
    return [
        ("web", "cxd-server"),
        ("ingest", "cxd-ingest"),
        ("worker", "cxd worker"),
        ("scheduler", "cxd scheduler"),
    ]


def run(processes: list[tuple[str, str]], env: dict[str, str], pidfile: Path | None = None) -> int:
    """Start every process, relay their output with a name prefix, stop all on a signal."""
    color = sys.stdout.isatty()
    width = max(len(n) for n, _ in processes)
    sel = selectors.DefaultSelector()
    children: dict[str, subprocess.Popen] = {}
    bindir = str(Path(sys.executable).parent)
    env = {**env, "PATH": bindir + os.pathsep + env.get("PATH", ""), "PYTHONUNBUFFERED": "1"}
    if pidfile:  # before any child starts, so `cxd down` can always find this process
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(str(os.getpid()))
    for i, (name, cmd) in enumerate(processes):
        proc = subprocess.Popen(
            cmd, shell=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop it and all it forks
        )  # fmt: skip
        children[name] = proc
        prefix = f"{COLORS[i % len(COLORS)] if color else ''}{name.ljust(width)} |{RESET if color else ''} "
        sel.register(proc.stdout, selectors.EVENT_READ, prefix)
    stopping = {"reason": None}

    def on_signal(signum, _frame):
        stopping["reason"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        while stopping["reason"] is None:
            for key, _ in sel.select(timeout=0.2):
                line = key.fileobj.readline()
                if line:
                    sys.stdout.write(key.data + line.decode(errors="replace"))
                    sys.stdout.flush()
                else:
                    sel.unregister(key.fileobj)
            dead = [n for n, p in children.items() if p.poll() is not None]
            if dead:
                stopping["reason"] = f"{dead[0]} exited with code {children[dead[0]].returncode}"
                code = 1
        print(f"cxd up: stopping ({stopping['reason']})", flush=True)
    finally:
        _stop_all(children)
        for s, h in old.items():
            signal.signal(s, h)
        if pidfile:
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
    return code


def _stop_all(children: dict[str, subprocess.Popen], grace: float = 15.0) -> None:
    for proc in children.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in children.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
    for proc in children.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        proc.wait()

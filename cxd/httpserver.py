"""Running a Flask app under gunicorn with threaded (gthread) workers: every open
websocket holds one thread, so the thread count bounds the websockets a worker holds."""

from __future__ import annotations

import os
from collections.abc import Callable

from gunicorn.app.base import BaseApplication

from cxd.errors import ConfigError

DEFAULT_THREADS = 1000


class _App(BaseApplication):
    def __init__(self, factory: Callable, options: dict):
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.factory()


def web_threads() -> int:
    """Threads per worker: ``CXD_WEB_THREADS`` [1000]."""
    raw = os.environ.get("CXD_WEB_THREADS", "").strip()
    try:
        threads = int(raw) if raw else DEFAULT_THREADS
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"CXD_WEB_THREADS={raw!r} must be a whole number of threads, 1 or more")
    return threads


def serve(
    factory: Callable,
    host: str,
    port: int,
    *,
    threads: int | None = None,
    workers: int = 1,
    **options,
) -> None:
    """Serve the app built by ``factory`` (called in each worker) until stopped."""
    threads = threads or web_threads()
    opts = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # idle keep-alive connections wait in the poller, not in a thread: allow more of them
        "worker_connections": threads + 1000,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 30,
        "backlog": 2048,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        **options,
    }
    _App(factory, opts).run()

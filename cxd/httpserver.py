"""Running a Flask app under gunicorn (threaded workers, so websockets can be held open)."""

from __future__ import annotations

from collections.abc import Callable

from gunicorn.app.base import BaseApplication


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


def serve(
    factory: Callable, host: str, port: int, *, threads: int = 64, workers: int = 1, **options
) -> None:
    """Serve the app built by ``factory`` (called in each worker) until stopped."""
    opts = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        **options,
    }
    _App(factory, opts).run()

"""Running a Flask app under gunicorn with threaded (gthread) workers: every open
websocket holds one thread, so the thread count bounds the websockets a worker holds."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import Future

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

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


class InlineWorker(ThreadWorker):
    """gthread, except that a request on a kept-alive connection whose bytes have all
    arrived is answered on the worker's own loop thread.

    gthread hands every request to a pool thread and the connection back to the loop
    (two thread switches and a pipe write), about a third of what a small webhook costs.
    Only complete requests are answered inline, so a slow client can never hold the loop;
    new connections, partial or chunked requests and TLS go to the pool as before. Not for
    apps that hold a request open (websockets): cxd-ingest only.
    """

    def enqueue_req(self, conn):
        if (
            conn.initialized
            and not self.cfg.is_ssl
            and not conn.parser.unreader.buf.getvalue()
            and _request_complete(conn.sock)
        ):
            done: Future = Future()
            try:
                done.set_result(self.handle(conn))
            except Exception as exc:  # handle() reports its own errors; be safe anyway
                done.set_exception(exc)
            self.finish_request(conn, done)
            return
        super().enqueue_req(conn)


def _request_complete(sock) -> bool:
    """True when the socket's buffer holds a whole request (headers and the
    Content-Length bytes of its body), looked at without reading it."""
    try:
        data = sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[:end].lower()
    if b"transfer-encoding:" in head or b"expect:" in head:
        return False
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        try:
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        except ValueError:
            return False
    return len(data) >= end + 4 + length


def whole_number_setting(name: str, default: int) -> int:
    """The whole number (1 or more) in environment variable ``name``, else ``default``."""
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be a whole number, 1 or more")
    return value


def web_threads() -> int:
    """Threads per worker: ``CXD_WEB_THREADS`` [1000]."""
    return whole_number_setting("CXD_WEB_THREADS", DEFAULT_THREADS)


def serve(
    factory: Callable,
    host: str,
    port: int,
    *,
    threads: int | None = None,
    workers: int = 1,
    inline: bool = False,
    **options,
) -> None:
    """Serve the app built by ``factory`` (called in each worker) until stopped.

    ``inline``: answer complete requests on kept-alive connections without a thread
    hand-off (:class:`InlineWorker`); only for apps that never hold a request open.
    """
    threads = threads or web_threads()
    opts = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "cxd.httpserver.InlineWorker" if inline else "gthread",
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

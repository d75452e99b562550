"""Websocket push on ``/ws`` (flask-sock) and the REST routes that go with it.

Protocol (JSON text messages; see docs/websocket.md):

- ``{"op": "subscribe", "id": "1", "query": "NAME", "params": {...}}`` follows a saved query;
  ``"page": "NAME"`` instead of ``"query"`` follows a page (its queries pushed together);
  ``"dataset": "NAME"`` (optionally ``"since": CURSOR_OR_ISO``) follows a dataset's changes.
- ``{"op": "unsubscribe", "id": "1"}`` stops one; ``{"op": "ping"}`` answers ``{"op": "pong"}``.
- The server answers ``{"op": "data", "id", "rows", "freshness", ...}`` at once, then on each
  change and at the query's refresh interval, only when the result changed; problems come as
  ``{"op": "error", "id", "error": {"code", "message", "details"}}``.

Each connection's handler thread sleeps on the websocket's own wake-up event, which the
reader thread sets when a message arrives and the hub sets when a result is queued; the
handler then reads what arrived and writes what is queued, so the hub never blocks on a
socket.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import termios
import threading
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from cxd.auth import require
from cxd.errors import BadInput, CxdError, Unauthorized
from cxd.stores import Stores
from serving.auth import needs, request_token
from serving.changes import read_changes
from serving.live import DB_SLOTS, DatasetFeed, Hub, TooManyConnections, dumps, error_message
from serving.pages import delete_page, get_page, list_pages, save_page

sock = Sock()
live_api = Blueprint("live_api", __name__)

CHANGES_PAGE = 1000
DEFAULTS = {  # app.config key -> (environment variable, default)
    "CXD_WS_PING_INTERVAL": ("CXD_WS_PING_INTERVAL", 25.0),
    "CXD_WS_MAX_MESSAGE": ("CXD_WS_MAX_MESSAGE", 65536),
    "CXD_WS_MAX_CONNECTIONS": ("CXD_WS_MAX_CONNECTIONS", 1000),
    "CXD_WS_COMPRESSION": ("CXD_WS_COMPRESSION", 0),
}


def _setting(app, key: str) -> float:
    env, default = DEFAULTS[key]
    value = app.config.get(key, os.environ.get(env) or default)
    return type(default)(value)


@live_api.record_once
def _install(state) -> None:
    app = state.app
    app.extensions["cxd.live"] = Hub(
        app.extensions["cxd.stores"],
        max_connections=int(_setting(app, "CXD_WS_MAX_CONNECTIONS")),
    )
    # flask-sock's options are shared by every websocket route (GraphQL adds its
    # subprotocol to them): merge ours in, never replace
    options = app.config.setdefault("SOCK_SERVER_OPTIONS", {})
    options.setdefault("ping_interval", _setting(app, "CXD_WS_PING_INTERVAL"))
    options.setdefault("max_message_size", int(_setting(app, "CXD_WS_MAX_MESSAGE")))


def hub() -> Hub:
    """This process's live hub."""
    return current_app.extensions["cxd.live"]


def stores() -> Stores:
    """The open stores of this app."""
    return current_app.extensions["cxd.stores"]


@live_api.before_request
def _guard():
    """Token and connection cap are checked before the upgrade, so refusals are plain HTTP."""
    if request.endpoint in ("live_api.websocket", "live_api.console_websocket"):
        with DB_SLOTS:
            if request.endpoint == "live_api.console_websocket":
                if not _console_session():  # the console's cookie lives under /admin
                    raise Unauthorized("log in to the console first")
            else:
                require(stores().db, request_token(), "read")
        if not _setting(current_app, "CXD_WS_COMPRESSION"):
            # permessage-deflate keeps ~300 KiB of zlib state per connection; results are
            # small JSON, so by default it is not offered (the handshake reads this header)
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        if len(hub().connections) >= hub().max_connections:
            raise TooManyConnections(
                f"this server holds its cap of {hub().max_connections} websocket connections"
            )


def _console_session() -> bool:
    """True when the request carries a valid operator-console session (an admin's cookie)."""
    from serving.admin.session import current_session

    return current_session() is not None


# --- the websocket -----------------------------------------------------------------------


def _subscribe(conn, sub_id: str, msg: dict[str, Any]) -> None:
    params = msg.get("params") or {}
    if not isinstance(params, dict):
        raise BadInput("params must be an object of name -> value")
    for kind in ("query", "page", "dataset"):
        name = msg.get(kind)
        if name is None:
            continue
        if not isinstance(name, str):
            raise BadInput(f"{kind} must be a name")
        if kind == "dataset":
            hub().follow(conn, sub_id, name, msg.get("since") or params.get("since"))
        else:
            hub().subscribe(conn, sub_id, kind, name, params)
        return
    raise BadInput('subscribe needs one of "query", "page" or "dataset"')


def handle(conn, text: str | bytes) -> None:
    """Act on one client message; problems are answered as error messages."""
    sub_id = None
    try:
        try:
            msg = json.loads(text)
        except ValueError:
            raise BadInput("messages are JSON objects with an op") from None
        if not isinstance(msg, dict):
            raise BadInput("messages are JSON objects with an op")
        op = msg.get("op")
        if op == "ping":
            conn.offer(("pong",), dumps({"op": "pong"}))
            return
        sub_id = msg.get("id")
        if not isinstance(sub_id, str | int) or isinstance(sub_id, bool):
            raise BadInput(f"{op or 'a message'} needs an id (a string)")
        sub_id = str(sub_id)
        if op == "subscribe":
            _subscribe(conn, sub_id, msg)
        elif op in ("dataset", "page"):  # shorthand: {"op": "page", "page": ...}
            _subscribe(conn, sub_id, {**msg, op: msg.get(op) or msg.get("name")})
        elif op == "unsubscribe":
            hub().unsubscribe(conn, sub_id)
            conn.offer(sub_id, dumps({"op": "unsubscribed", "id": sub_id}))
        else:
            raise BadInput(f"op must be subscribe, unsubscribe or ping; got {op!r}")
    except CxdError as exc:
        conn.offer(("error", sub_id), error_message(sub_id, exc))


def push_changes(ws: Sender, conn) -> None:
    """Send each followed dataset's new changes (a few pages per wake-up)."""
    for sub_id, sub in list(conn.subs.items()):
        if not isinstance(sub, DatasetFeed) or not sub.dirty:
            continue
        sub.dirty = False
        try:
            for _ in range(5):
                with DB_SLOTS:
                    page = read_changes(stores(), sub.dataset, sub.cursor, CHANGES_PAGE)
                sub.cursor = page["next"]
                if page["rows"] or not sub.sent:
                    sub.sent = True
                    ws.send(dumps({"op": "data", "id": sub_id, "dataset": sub.dataset, **page}))
                if len(page["rows"]) < CHANGES_PAGE:
                    break
            else:
                sub.dirty = True  # more to come: let the other work of this socket go first
                conn.wake()
        except CxdError as exc:
            ws.send(error_message(sub_id, exc))


class Sender:
    """Socket writes of one websocket, serialised, with a send that never blocks.

    The hub's fan-out calls :meth:`try_send` for every subscriber in turn: it writes only
    when the kernel's send buffer has room for the whole frame (so the write cannot block
    or be cut short), and otherwise leaves the message to the connection's own thread.
    """

    def __init__(self, ws, *, raw: bool):
        self.ws = ws
        self.raw = raw  # no extension negotiated: frames are header + payload
        self.lock = threading.Lock()
        self.fd = ws.sock.fileno()
        self.room = ws.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2

    def _queued(self) -> int:
        return struct.unpack("i", fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]

    def _write(self, text: str) -> None:
        if not self.raw:
            self.ws.send(text)
            return
        if not self.ws.connected:
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        self.ws.sock.sendall(frame(text))

    def try_send(self, text: str) -> bool:
        """Write ``text`` now if that cannot block; False (nothing written) otherwise."""
        if not self.ws.connected or not self.lock.acquire(blocking=False):
            return False
        try:
            if self._queued() + 4 * len(text) + 10 > self.room:
                return False
            self._write(text)
            return True
        except (OSError, ConnectionClosed):
            return False
        finally:
            self.lock.release()

    def send(self, text: str) -> None:
        """Write ``text``, waiting for the socket if need be (the connection's own thread)."""
        with self.lock:
            self._write(text)


def frame(text: str) -> bytes:
    """An unmasked, unfragmented websocket text frame (what a server sends)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


@sock.route("/admin/ws", bp=live_api, endpoint="console_websocket")
def console_websocket(ws):
    """``/ws`` for the operator console's pages, authenticated by the console session."""
    serve_client(ws)


@sock.route("/ws", bp=live_api, endpoint="websocket")
def websocket(ws):
    """One client of ``/ws``."""
    serve_client(ws)


def serve_client(ws) -> None:
    """One client: read its messages, write what the hub queued for it, until it goes."""
    sender = Sender(ws, raw=not _setting(current_app, "CXD_WS_COMPRESSION"))
    try:
        conn = hub().connect(ws.event.set, sender.try_send)
    except TooManyConnections as exc:
        ws.send(error_message(None, exc))
        ws.close(1013, exc.message)
        return
    idle = 30.0
    try:
        while True:
            woke = ws.event.wait(timeout=idle)
            ws.event.clear()
            busy = False
            while (text := ws.receive(timeout=0)) is not None:
                handle(conn, text)
                busy = True
            push_changes(sender, conn)
            try:
                for message in (messages := conn.take()):
                    sender.send(message)
            finally:
                conn.sent()
            # The reader wakes us just before it marks the socket closed: after a wake-up
            # with nothing to do, look again soon rather than sleeping the full interval.
            idle = 0.05 if woke and not busy and not messages else 30.0
            if conn.overflowed:
                ws.close(1008, "slow consumer: results arrived faster than they were read")
                return
    finally:
        hub().disconnect(conn)


# --- REST: live stats and pages ----------------------------------------------------------


@live_api.get("/api/live")
@needs("read")
def live_stats():
    """Websocket connections, subscriptions and how often each shared result was evaluated."""
    return jsonify(hub().stats())


@live_api.post("/api/pages")
@needs("analyst")
def pages_save():
    """Save (create or replace) a page."""
    return jsonify(save_page(stores(), request.get_json(silent=True))), 201


@live_api.get("/api/pages")
@needs("read")
def pages_list():
    """Every page."""
    return jsonify(list_pages(stores()))


@live_api.get("/api/pages/<name>")
@needs("read")
def pages_get(name: str):
    """One page."""
    return jsonify(get_page(stores(), name))


@live_api.delete("/api/pages/<name>")
@needs("analyst")
def pages_delete(name: str):
    """Delete a page."""
    delete_page(stores(), name)
    return "", 204

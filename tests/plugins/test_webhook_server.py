"""cxd-ingest's HTTP worker: complete requests on kept-alive connections are answered on
the worker's loop, and a client that sends half a request never holds up the others."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.plugins.brokers import free_port, wait_for_port

APP = """
import time
def factory():
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        reply = b'{"len": %d}' % len(body)
        start_response("202 Accepted", [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(reply)))])
        return [reply]
    return app
from cxd.httpserver import serve
serve(factory, "127.0.0.1", PORT, workers=1, threads=4, inline=True)
"""


@pytest.fixture
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", APP.replace("PORT", str(port))])
    try:
        wait_for_port(port, timeout=30)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def request(body: bytes) -> bytes:
    return (
        b"POST /hooks/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


def answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    return data


def test_a_half_sent_request_does_not_hold_up_other_clients(server):
    with (
        socket.create_connection(("127.0.0.1", server)) as slow,
        socket.create_connection(("127.0.0.1", server)) as fast,
    ):
        talk(slow, fast)


def talk(slow: socket.socket, fast: socket.socket) -> None:
    slow.settimeout(10)
    fast.settimeout(10)
    slow.sendall(request(b'{"a": 1}'))
    assert b"202" in answer(slow)  # now a kept-alive connection: the inline path
    half = request(b'{"a": 1, "b": 2}')
    slow.sendall(half[:-6])  # the rest comes later
    time.sleep(0.2)
    for _ in range(3):
        started = time.monotonic()
        fast.sendall(request(b"{}"))
        assert b'{"len": 2}' in answer(fast)
        assert time.monotonic() - started < 2
    slow.sendall(half[-6:])
    assert b'{"len": 16}' in answer(slow)
    # pipelined: two complete requests in one write are both answered, in order
    fast.sendall(request(b"[1]") + request(b"[1, 2]"))
    both = b""
    while both.count(b"202 Accepted") < 2 or not both.endswith(b"}"):
        both += fast.recv(4096)
    assert both.index(b'{"len": 3}') < both.index(b'{"len": 6}')

"""cxd-ingest's HTTP worker: complete requests on kept-alive connections are answered on
the worker's loop, and a client that sends half a request never holds up the others."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from cxd.auth import create_token
from speed.stream import read_after
from tests.plugins.brokers import free_port, wait_for_port
from tests.plugins.sources import process_env, stop_process

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


def test_retries_after_cxd_ingest_is_killed_store_every_event_once(stores, settings, tmp_path):
    """Senders post with Idempotency-Keys while cxd-ingest is killed -9 (anywhere: before,
    during or after a request's append, or before its answer left); every request is then
    sent again to a restarted cxd-ingest. Each event is stored exactly once, and every
    answer to a repeated key carries the ids of the first."""

    source = {
        "name": "hits",
        "type": "webhook",
        "columns": [{"name": "n", "type": "bigint"}, {"name": "at", "type": "timestamptz"}],
        "time_column": "at",
    }
    settings.config_file.write_text(yaml.safe_dump({"sources": [source]}))
    port = free_port()
    env = process_env(settings, CXD_INGEST_PORT=str(port), CXD_INGEST_WORKERS="2")
    url = f"http://127.0.0.1:{port}/hooks/hits"
    headers = {"Authorization": f"Bearer {create_token(stores.db, 'ingest')}"}
    bin_ingest = str(Path(sys.executable).parent / "cxd-ingest")

    def start():
        proc = subprocess.Popen(
            [bin_ingest], env=env, stdout=log, stderr=log, start_new_session=True
        )
        wait_for_port(port, timeout=60)
        return proc

    def body(k):
        return [{"n": k * 10 + i, "at": "2026-05-05T10:00:00Z"} for i in range(10)]

    answers: dict[int, list] = {}
    with open(tmp_path / "ingest.log", "wb") as log:
        proc = start()
        try:

            def kill_midway():
                while len(answers) < 100:
                    time.sleep(0.002)
                time.sleep(random.uniform(0, 0.01))  # lands anywhere, also inside a request
                os.killpg(proc.pid, signal.SIGKILL)  # the whole of cxd-ingest: workers too

            killer = threading.Thread(target=kill_midway)
            killer.start()
            with requests.Session() as session:
                for k in range(300):
                    try:
                        r = session.post(
                            url, json=body(k), headers={**headers, "Idempotency-Key": f"k{k}"},
                            timeout=5,
                        )  # fmt: skip
                    except requests.RequestException:
                        continue
                    if r.status_code == 202:
                        answers[k] = r.json()["ids"]
            killer.join()
            proc.wait()
            proc = start()
            for k in range(300):  # the senders retry everything they sent, until answered
                r = post_until_answered(url, body(k), {**headers, "Idempotency-Key": f"k{k}"})
                assert r.status_code == 202, r.text
                if k in answers:
                    assert r.json()["ids"] == answers[k]
                    assert r.headers["Idempotent-Replayed"] == "true"
        finally:
            stop_process(proc)
    assert 0 < len(answers) < 300
    numbers = [rec["n"] for _, rec in read_after(stores.redis, "hits", "0-0")]
    assert sorted(numbers) == list(range(3000))  # every event once: none lost, none twice


def post_until_answered(url: str, body, headers, seconds: float = 30) -> requests.Response:
    """POST like a sender that retries on connection errors (a worker of the killed
    cxd-ingest may still hold a connection for a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.post(url, json=body, headers=headers, timeout=10)
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

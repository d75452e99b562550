"""An open-loop HTTP load generator: POSTs one fixed request at a fixed rate over keep-alive
connections and measures each answer's latency from its *scheduled* send time (so a slow
server cannot slow the client down and hide its own queueing) and from the actual send.

It runs in its own process (``bench/speed_ingest.py`` starts it) so the client never
shares a GIL with the code that measures or serves. One thread, non-blocking sockets and
``select`` (microsecond timeouts; epoll's are whole milliseconds, which would add up to a
millisecond of timer slop to every latency).

    python bench/openloop.py URL --rate 1000 --seconds 5 --header "Authorization: Bearer T" \\
        --body '{"a": 1}'

Prints one JSON object: requests sent and answered, the rate reached, non-2xx answers, and
p50/p90/p99/max in milliseconds from the scheduled and from the actual send.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import percentile  # noqa: E402


class _Conn:
    __slots__ = ("sock", "buf", "due", "sent", "counted")

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.due = self.sent = 0.0
        self.counted = False


def _response_end(buf: bytearray) -> tuple[int, int] | None:
    """(status, length of the whole response) once ``buf`` holds a complete one."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buf[:head_end]).lower()
    status = int(head[9:12])
    length = 0
    at = head.find(b"content-length:")
    if at >= 0:
        eol = head.find(b"\r\n", at)
        length = int(head[at + 15 : eol if eol >= 0 else len(head)])
    total = head_end + 4 + length
    return (status, total) if len(buf) >= total else None


def run(
    url: str,
    body: bytes,
    headers: dict[str, str],
    rate: float,
    seconds: float,
    *,
    warmup: float = 1.0,
    connections: int = 64,
    slow: list | None = None,
) -> dict:
    """Send ``rate`` requests a second for ``warmup + seconds``; measure the last ``seconds``."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}",
             f"Content-Length: {len(body)}", "Content-Type: application/json"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    sel = selectors.SelectSelector()
    idle: deque[_Conn] = deque()
    for _ in range(connections):
        conn = _Conn(address)
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        idle.append(conn)
    interval = 1.0 / rate
    total = int(rate * (warmup + seconds))
    first_counted = int(rate * warmup)
    waiting: deque[tuple[float, bool]] = deque()  # scheduled sends without a free connection
    from_due: list[float] = []
    from_send: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter() + 0.05
    scheduled = answered = 0
    measure_start = measure_end = 0.0
    while answered < total:
        now = time.perf_counter()
        while scheduled < total and start + scheduled * interval <= now:
            waiting.append((start + scheduled * interval, scheduled >= first_counted))
            scheduled += 1
        while waiting and idle:
            conn = idle.popleft()
            conn.due, conn.counted = waiting.popleft()
            conn.sent = time.perf_counter()
            if conn.counted and not measure_start:
                measure_start = conn.due
            conn.sock.sendall(request)  # a few hundred bytes: the socket buffer takes them
        if scheduled < total:
            timeout = max(0.0, start + scheduled * interval - time.perf_counter())
        else:
            timeout = 5.0
        events = sel.select(timeout)
        if not events and scheduled >= total and timeout == 5.0:
            errors["timeout"] = total - answered
            break
        for key, _ in events:
            conn = key.data
            chunk = conn.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a keep-alive connection")
            conn.buf += chunk
            done = _response_end(conn.buf)
            if done is None:
                continue
            status, length = done
            del conn.buf[:length]
            end = time.perf_counter()
            answered += 1
            if conn.counted:
                if slow is not None and end - conn.due > 0.005:
                    slow.append((round(conn.due - start, 4), round((end - conn.due) * 1000, 2)))
                from_due.append((end - conn.due) * 1000)
                from_send.append((end - conn.sent) * 1000)
                measure_end = end
                if not 200 <= status < 300:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            idle.append(conn)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    counted = len(from_due)
    return {
        "sent": total,
        "measured": counted,
        "rate": counted / (measure_end - measure_start) if measure_end > measure_start else 0.0,
        "errors": errors,
        "from_scheduled": {p: percentile(from_due, q) for p, q in _PCTS},
        "from_send": {p: percentile(from_send, q) for p, q in _PCTS},
    }


_PCTS = (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    ap.add_argument("--header", action="append", default=[], help="'Name: value'")
    ap.add_argument("--body", default="{}", help="the JSON body of every request")
    args = ap.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    result = run(
        args.url,
        args.body.encode(),
        headers,
        args.rate,
        args.seconds,
        warmup=args.warmup,
        connections=args.connections,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Websocket push latency and memory: N subscribers to one saved query on /ws.

    .venv/bin/python bench/live_push.py [--sizes 100,500,1000] [--events 25] [--rate 5]

For each N, a fresh cxd-server (gunicorn, as deployed) holds N websocket subscribers to
one saved query; events are appended to the speed layer at a steady rate, and each
subscriber times from "append accepted" to receiving the updated result. The ceiling is
measured in the same run: a bare flask-sock app under the same gunicorn settings whose
one thread does XREAD BLOCK on a stream and sends each entry to the same N sockets, i.e.
a bare XADD -> XREAD round trip plus a bare flask-sock broadcast (the XADD -> XREAD hop
alone is printed above the table). Memory is
the cxd-server worker's RSS with N subscribers minus its RSS with none, per subscriber.

Stores: CXD_BENCH_DATABASE_URL / CXD_BENCH_REDIS_URL (default: the local PostgreSQL and
Redis db 7 on their standard ports; embedded ones when those are not reachable). The bench
works in a database of its own (dropped afterwards) and touches only its own Redis keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg2  # noqa: E402
import redis  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from bench.common import median, percentile, table  # noqa: E402

DATASET = "bench_live"
BARE_STREAM = "bench:bare:log"
QUERY = {
    "name": "bench_latest",
    "sql": f"SELECT count(*) AS n, max(id) AS last_id FROM {DATASET}",
    "params": [],
}

CXD_SERVER = """
import sys
sys.path.insert(0, {root!r})
from cxd.httpserver import serve
from serving import create_app
serve(create_app, "127.0.0.1", {port}, threads={threads}, worker_connections={threads} + 64)
"""

BARE_SERVER = """
import sys, threading
import redis
from flask import Flask
from flask_sock import Sock
sys.path.insert(0, {root!r})
from cxd.httpserver import serve

def factory():
    app = Flask(__name__)
    sock = Sock(app)
    clients = set()
    lock = threading.Lock()

    def broadcast():
        r = redis.Redis.from_url({redis_url!r})
        last = "$"
        while True:
            for _, entries in r.xread({{{stream!r}: last}}, block=0):
                for eid, fields in entries:
                    last = eid
                    with lock:
                        targets = list(clients)
                    for ws in targets:
                        try:
                            ws.send(fields[b"d"].decode())
                        except Exception:
                            pass

    threading.Thread(target=broadcast, daemon=True).start()

    @sock.route("/ws")
    def ws_route(ws):
        with lock:
            clients.add(ws)
        try:
            while ws.receive() is not None:
                pass
        finally:
            with lock:
                clients.discard(ws)

    return app

serve(factory, "127.0.0.1", {port}, threads={threads}, worker_connections={threads} + 64)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(db_url: str, redis_url: str) -> bool:
    try:
        psycopg2.connect(db_url, connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except (psycopg2.Error, redis.RedisError):
        return False
    return True


class Stores:
    """A bench database of its own on the chosen servers (or embedded ones)."""

    def __init__(self):
        db_url = os.environ.get(
            "CXD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        )
        self.redis_url = os.environ.get("CXD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
        self.home = None
        if not reachable(db_url, self.redis_url):
            from cxd import embedded

            self.home = Path(tempfile.mkdtemp(prefix="cxdb-", dir="/tmp"))
            db_url = embedded.start_postgres(self.home)
            self.redis_url = embedded.start_redis(self.home)
        self.admin_url = db_url
        self.dbname = f"cxd_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(db_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.dbname}"')
        admin.close()
        self.db_url = urlunparse(urlparse(db_url)._replace(path="/" + self.dbname))
        self.redis = redis.Redis.from_url(self.redis_url)
        self.clean_redis()

    def clean_redis(self) -> None:
        for key in self.redis.scan_iter(match=f"cxd:{{{DATASET}}}:*"):
            self.redis.delete(key)
        self.redis.delete(BARE_STREAM)

    def close(self) -> None:
        self.clean_redis()
        admin = psycopg2.connect(self.admin_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.dbname,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
        admin.close()
        if self.home:
            from cxd import embedded

            embedded.stop_postgres(self.home)
            embedded.stop_redis(self.home)
            shutil.rmtree(self.home, ignore_errors=True)


def prepare(stores: Stores) -> str:
    """Migrate the bench database, declare the dataset and save the query; return a token."""
    from batch.tables import register_dataset
    from cxd.auth import create_token
    from cxd.catalog import parse_source, save_source
    from cxd.config import Settings
    from cxd.migrations import migrate
    from cxd.stores import Database
    from cxd.stores import Stores as CxdStores
    from query_router.saved import save_query

    db = Database(stores.db_url, maxconn=2)
    migrate(db)
    spec = parse_source(
        {
            "name": DATASET,
            "type": "webhook",
            "kind": "time_series",
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "t", "type": "timestamptz"},
            ],
            "key": ["id"],
            "time_column": "t",
        }
    )
    save_source(db, spec)
    register_dataset(db, spec)
    settings = Settings(database_url=stores.db_url, redis_url=stores.redis_url)
    save_query(CxdStores(settings=settings, db=db, redis=stores.redis), QUERY)
    token = create_token(db, "read")
    db.close()
    return token


class Server:
    """A gunicorn server in a subprocess; ``rss()`` is its worker's resident memory."""

    def __init__(self, source: str, env: dict[str, str]):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source.format(port=self.port, **env.pop("_fmt"))],
            env={**os.environ, **env},
            cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    def rss(self) -> int:
        workers = psutil.Process(self.proc.pid).children()
        return sum(w.memory_info().rss for w in workers)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def open_clients(url: str, n: int, headers: dict[str, str]) -> list:
    limit = asyncio.Semaphore(50)

    async def one():
        async with limit:
            return await connect(
                url,
                additional_headers=headers,
                ping_interval=None,
                compression=None,
                max_size=None,
                open_timeout=60,
            )

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def measure(
    url: str,
    n: int,
    *,
    headers: dict[str, str],
    subscribe: str | None,
    last_id,
    append,
    events: int,
    rate: float,
    on_ready=None,
) -> tuple[list[float], int, int | None]:
    """Seconds from each append to each client receiving it, how many never arrived, and
    ``on_ready()`` (the server's memory) once every client holds its first result."""
    clients = await open_clients(url, n, headers)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    ready = asyncio.Event()
    initial = 0
    done = asyncio.Event()
    received = dict.fromkeys(range(1, events + 1), 0)

    async def reader(ws):
        nonlocal initial
        try:
            async for message in ws:
                now = time.monotonic()
                k = last_id(message)
                if k in sent:
                    latencies.append(now - sent[k])
                    received[k] += 1
                    if received[events] == n:
                        done.set()
                elif not ready.is_set():
                    initial += 1
                    if initial == n:
                        ready.set()
        except Exception:  # noqa: BLE001 - a dropped client shows up as missing results
            pass

    tasks = [asyncio.create_task(reader(ws)) for ws in clients]
    if subscribe:
        for ws in clients:
            await ws.send(subscribe)
        await asyncio.wait_for(ready.wait(), timeout=120)
    await asyncio.sleep(1.0)
    memory = on_ready() if on_ready else None
    for k in range(1, events + 1):
        append(k)
        sent[k] = time.monotonic()
        await asyncio.sleep(1 / rate)
    if events:
        try:
            await asyncio.wait_for(done.wait(), timeout=15)
        except TimeoutError:
            pass
    for ws in clients:
        await ws.close()
    for task in tasks:
        task.cancel()
    missing = n * events - len(latencies)
    return latencies, missing, memory


def xadd_xread(redis_url: str, rounds: int) -> list[float]:
    """The bare XADD -> XREAD round trip (a blocked reader thread wakes on each entry)."""
    client = redis.Redis.from_url(redis_url)
    stamps: dict[int, float] = {}
    out: list[float] = []
    got = threading.Event()

    def read():
        r = redis.Redis.from_url(redis_url)
        last = "$"
        n = 0
        while n < rounds:
            for _, entries in r.xread({BARE_STREAM: last}, block=5000):
                for eid, fields in entries:
                    last = eid
                    out.append(time.monotonic() - stamps[int(fields[b"d"])])
                    n += 1
                    got.set()

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.2)
    for k in range(rounds):
        got.clear()
        stamps[k] = time.monotonic()
        client.xadd(BARE_STREAM, {"d": str(k)})
        got.wait(5)
        time.sleep(0.01)
    thread.join()
    client.delete(BARE_STREAM)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--events", type=int, default=25, help="events per size")
    parser.add_argument("--rate", type=float, default=5.0, help="events per second")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = max(sizes) + 64
    stores = Stores()
    rows = []
    try:
        token = prepare(stores)
        headers = {"Authorization": f"Bearer {token}"}
        from speed.stream import append as speed_append

        xr = xadd_xread(stores.redis_url, 200)
        for n in sizes:
            # --- cxd-server --------------------------------------------------------
            stores.clean_redis()
            server = Server(
                CXD_SERVER,
                {
                    "_fmt": {"root": str(ROOT), "threads": threads},
                    "CXD_DATABASE_URL": stores.db_url,
                    "CXD_REDIS_URL": stores.redis_url,
                    "CXD_WS_MAX_CONNECTIONS": str(threads),
                    "CXD_LOG_LEVEL": "WARNING",
                },
            )
            try:
                url = f"ws://127.0.0.1:{server.port}/ws"
                # warm up: the hub's threads and the query's first evaluation
                base = asyncio.run(
                    measure(
                        url,
                        1,
                        headers=headers,
                        subscribe=json.dumps(
                            {"op": "subscribe", "id": "w", "query": "bench_latest"}
                        ),
                        last_id=lambda m: json.loads(m).get("rows", [{}])[0].get("last_id"),
                        append=lambda k: None,
                        events=0,
                        rate=1,
                    )
                )
                del base
                time.sleep(0.5)
                rss_before = server.rss()
                offset = 1_000_000 * n

                def append(k, offset=offset):
                    speed_append(
                        stores.redis,
                        DATASET,
                        [{"id": offset + k, "t": "2026-05-05T10:00:00Z"}],
                    )

                def last_id(message, offset=offset):
                    value = json.loads(message).get("rows", [{}])[0].get("last_id")
                    return value - offset if value is not None and value > offset else None

                lat, missing, rss_after = asyncio.run(
                    measure(
                        url,
                        n,
                        headers=headers,
                        subscribe=json.dumps(
                            {"op": "subscribe", "id": "q", "query": "bench_latest"}
                        ),
                        last_id=last_id,
                        append=append,
                        events=args.events,
                        rate=args.rate,
                        on_ready=server.rss,
                    )
                )
            finally:
                server.stop()
            # --- the ceiling: bare XADD -> XREAD -> flask-sock broadcast ---------------
            stores.clean_redis()
            bare = Server(
                BARE_SERVER,
                {
                    "_fmt": {
                        "root": str(ROOT),
                        "threads": threads,
                        "redis_url": stores.redis_url,
                        "stream": BARE_STREAM,
                    }
                },
            )
            try:
                blat, bmissing, _ = asyncio.run(
                    measure(
                        f"ws://127.0.0.1:{bare.port}/ws",
                        n,
                        headers={},
                        subscribe=None,
                        last_id=lambda m: json.loads(m)["k"],
                        append=lambda k: stores.redis.xadd(
                            BARE_STREAM, {"d": json.dumps({"k": k})}
                        ),
                        events=args.events,
                        rate=args.rate,
                    )
                )
            finally:
                bare.stop()
            ceiling99 = percentile(blat, 99)  # includes its own XADD -> XREAD hop
            ours99 = percentile(lat, 99)
            rows.append(
                [
                    n,
                    median(lat) * 1000,
                    ours99 * 1000,
                    median(blat) * 1000,
                    ceiling99 * 1000,
                    ours99 / ceiling99,
                    missing,
                    (rss_after - rss_before) / n / 1024,
                ]
            )
    finally:
        stores.close()
    print(
        f"Websocket push: N subscribers to one saved query, {args.events} events at "
        f"{args.rate:g}/s per size. Bare XADD -> XREAD round trip: p50 "
        f"{median(xr) * 1000:.2f} ms, p99 {percentile(xr, 99) * 1000:.2f} ms.\n"
    )
    print(
        table(
            [
                "subscribers",
                "cxd p50 ms",
                "cxd p99 ms",
                "bare broadcast p50 ms",
                "ceiling p99 ms",
                "cxd p99 / ceiling",
                "results missing",
                "server KiB per subscriber",
            ],
            rows,
        )
    )
    print(
        "\nTargets: at N = 500, p99 <= 1.5x the ceiling and < 50 ms;"
        " < 100 KiB of server memory per subscriber."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

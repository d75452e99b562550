"""``cxd demo``: a small factory with sample sources, a saved query, and a live feed.

Production records (which machine made which product when) come from CSV files read by
the file plugin; sensor events (each product's class faults) are POSTed to the webhook
receiver by the feeder as products are made. The saved query ``parts_by_machine`` joins
both, so its answer merges Postgres and Redis.
"""

from __future__ import annotations

import json
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import yaml

from cxd.config import Settings

MACHINES = ["press-1", "press-2", "lathe-1", "mill-1"]
PRODUCTS = ["bracket", "housing", "shaft"]

DEMO_SOURCES = {
    "sources": [
        {
            "name": "production",
            "type": "file",
            "kind": "time_series",
            "options": {"path": "data/production/*.csv", "format": "csv"},
            "columns": [
                {"name": "product_id", "type": "text"},
                {"name": "machine", "type": "text"},
                {"name": "product", "type": "text"},
                {"name": "made_at", "type": "timestamptz"},
            ],
            "key": ["product_id"],
            "time_column": "made_at",
            "schedule": {"every": "30s"},
        },
        {
            "name": "sensor",
            "type": "webhook",
            "kind": "time_series",
            "columns": [
                {"name": "event_id", "type": "text"},
                {"name": "product_id", "type": "text"},
                {"name": "machine", "type": "text"},
                {"name": "faults", "type": "integer"},
                {"name": "measured_at", "type": "timestamptz"},
            ],
            "key": ["event_id"],
            "time_column": "measured_at",
        },
    ]
}

DEMO_QUERY = {
    "name": "parts_by_machine",
    "sql": (
        "SELECT p.machine, count(DISTINCT p.product_id) AS parts, count(s.event_id) AS sensor_events,"
        " coalesce(sum(s.faults), 0) AS faults FROM production p"
        " LEFT JOIN sensor s ON s.product_id = p.product_id"
        " WHERE :machine = 'all' OR p.machine = :machine GROUP BY p.machine ORDER BY p.machine"
    ),
    "params": [{"name": "machine", "type": "text", "default": "all"}],
    "outputs": [
        {"name": "machine", "type": "text"},
        {"name": "parts", "type": "bigint"},
        {"name": "sensor_events", "type": "bigint"},
        {"name": "faults", "type": "bigint"},
    ],
    "refresh": "5s",
}


def demo_dir(settings: Settings) -> Path:
    """Where the demo keeps its cxd.yml, data files and token."""
    return settings.home / "demo"


def write_production_file(folder: Path, start: datetime, count: int, rng: random.Random) -> Path:
    """A CSV of ``count`` products made from ``start`` on, one every minute."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"production-{start:%Y%m%dT%H%M%S}.csv"
    lines = ["product_id,machine,product,made_at"]
    for i in range(count):
        at = start + timedelta(minutes=i)
        lines.append(
            f"P{at:%Y%m%d%H%M}-{i},{rng.choice(MACHINES)},{rng.choice(PRODUCTS)},{at.isoformat()}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare_demo(settings: Settings) -> Settings:
    """Write the demo's sources and data, load them once, save its query and an admin token."""
    from dataclasses import replace

    from batch.jobs import execute_run
    from batch.runs import create_run
    from cxd.auth import create_token
    from cxd.bootstrap import prepare, sync_config
    from cxd.stores import open_stores
    from query_router.saved import save_query

    folder = demo_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    doc = json.loads(json.dumps(DEMO_SOURCES))
    doc["sources"][0]["options"]["path"] = str(folder / "data/production/*.csv")
    (folder / "cxd.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    settings = replace(settings, config_file=folder / "cxd.yml")
    prod = folder / "data/production"
    if not any(prod.glob("*.csv")):
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
        write_production_file(prod, start, 240, random.Random(7))
    settings = prepare(settings)
    sync_config(settings)
    stores = open_stores(settings, application_name="cxd-demo")
    try:
        execute_run(stores, create_run(stores.db, "production"))
        save_query(stores, DEMO_QUERY)
        token_file = folder / "admin.token"
        if not token_file.exists():
            token_file.write_text(create_token(stores.db, "admin", "demo"))
            token_file.chmod(0o600)
        token = token_file.read_text().strip()
    finally:
        stores.close()
    base = f"http://{settings.host}:{settings.port}"
    print("cxd demo: try")
    print(f"  curl -H 'Authorization: Bearer {token}' {base}/api/queries/parts_by_machine/results")
    print(f"  (the admin token is also in {token_file})", flush=True)
    return settings


def feed(settings: Settings, interval: float = 1.0) -> int:
    """Post one sensor event per interval for recently made products, until stopped."""
    folder = demo_dir(settings)
    token = (folder / "admin.token").read_text().strip()
    url = f"http://{settings.host}:{settings.ingest_port}/hooks/sensor"
    rng = random.Random()
    running = {"on": True}
    signal.signal(signal.SIGTERM, lambda *_: running.update(on=False))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    n = 0
    files = sorted((folder / "data/production").glob("*.csv"))
    products = (
        [line.split(",")[:2] for line in files[-1].read_text().splitlines()[1:]] if files else []
    )
    while running["on"]:
        if products:
            product_id, machine = rng.choice(products)
            event = {
                "event_id": f"E{time.time_ns()}",
                "product_id": product_id,
                "machine": machine,
                "faults": rng.choice([0, 0, 0, 1, 2, 3, 4]),
                "measured_at": datetime.now(UTC).isoformat(),
            }
            try:
                session.post(url, json=event, timeout=5).raise_for_status()
                n += 1
                if n % 30 == 0:
                    print(f"demo feed: {n} sensor events posted", flush=True)
            except requests.RequestException as exc:
                print(f"demo feed: waiting for cxd-ingest ({type(exc).__name__})", flush=True)
        time.sleep(interval)
    return 0

"""``cxd demo``: the factory scenario, machines on shifts making parts, on three real sources.

- ``production`` (which machine made which product when) lives in a separate Postgres
  database, ``cxd_factory``, and is pulled over ODBC (psqlODBC) every 10 seconds;
- ``shifts``: the shift hand-over sheet, an Excel file read by the file plugin;
- ``sensor``: one event per product with its class faults and measurements, published
  over MQTT when a broker answers (``CXD_DEMO_MQTT``, default 127.0.0.1:1883) and POSTed
  to the webhook receiver otherwise.

Every start resets the sources and cxd's copies of them, fills the last two weeks, and
then ``cxd demo-feed`` keeps the factory producing (pruning what is older than two
weeks). Five saved queries with inputs ``machine`` and ``shift`` feed the dashboard page
``factory``, pushed live over the websocket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import yaml

from cxd.config import Settings
from cxd.errors import ConfigError
from cxd.factory import MACHINES, Factory, mqtt_emitter, webhook_emitter

FACTORY_DB = "cxd_factory"
HISTORY_SCALE = 2.0  # the two weeks of history: about 170 parts an hour
LIVE_SCALE = 20.0  # the live shift runs flat out: about 28 parts a minute, so every output moves
TICK_SECONDS = 2.0
DATASETS = ("production", "shifts", "sensor")
INPUTS = [
    {"name": "machine", "type": "text", "default": "all", "choices": ["all", *MACHINES]},
    {
        "name": "shift",
        "type": "text",
        "default": "all",
        "choices": ["all", "early", "late", "night"],
    },
]
_PARAMS = [{"name": i["name"], "type": i["type"], "default": i["default"]} for i in INPUTS]
_SENSOR_FILTER = "(:machine = 'all' OR machine = :machine) AND (:shift = 'all' OR shift = :shift)"

QUERIES = [
    {
        "name": "parts_per_minute",
        "title": "Parts per minute (last 5 minutes)",
        "sql": "SELECT round(count(*) / 5.0, 1) AS parts_per_minute FROM sensor"
        f" WHERE measured_at > now() - interval '5 minutes' AND {_SENSOR_FILTER}",
        "outputs": [{"name": "parts_per_minute", "type": "numeric"}],
        "view": "card",
    },
    {
        "name": "total_parts",
        "title": "Total parts (two weeks)",
        "sql": f"SELECT count(*) AS total_parts FROM sensor WHERE {_SENSOR_FILTER}",
        "outputs": [{"name": "total_parts", "type": "bigint"}],
        "view": "card",
    },
    {
        "name": "parts_this_shift",
        "title": "Parts this shift",
        "sql": "SELECT count(*) AS parts_this_shift FROM sensor WHERE measured_at >="
        " (SELECT max(starts_at) FROM shifts WHERE starts_at <= now())"
        f" AND {_SENSOR_FILTER}",
        "outputs": [{"name": "parts_this_shift", "type": "bigint"}],
        "view": "card",
    },
    {
        "name": "parts_per_machine",
        "title": "Parts per machine",
        "sql": f"SELECT machine, count(*) AS parts FROM sensor WHERE {_SENSOR_FILTER}"
        " GROUP BY machine ORDER BY machine",
        "outputs": [{"name": "machine", "type": "text"}, {"name": "parts", "type": "bigint"}],
        "view": "bar",
    },
    {
        "name": "faulty_products",
        "title": "Products with class faults above 2",
        "sql": "SELECT s.product_id, s.machine, s.class_faults, p.product, p.made_at,"
        " s.temperature, s.vibration FROM sensor s JOIN production p ON p.product_id = s.product_id"
        " WHERE s.class_faults > 2 AND (:machine = 'all' OR s.machine = :machine)"
        " AND (:shift = 'all' OR s.shift = :shift) ORDER BY s.measured_at DESC LIMIT 20",
        "outputs": [
            {"name": "product_id", "type": "text"},
            {"name": "machine", "type": "text"},
            {"name": "class_faults", "type": "integer"},
            {"name": "product", "type": "text"},
            {"name": "made_at", "type": "timestamptz"},
            {"name": "temperature", "type": "double precision"},
            {"name": "vibration", "type": "double precision"},
        ],
        "view": "table",
    },
]
PAGE = {
    "name": "factory",
    "title": "Factory floor",
    "inputs": INPUTS,
    "queries": [q["name"] for q in QUERIES],
}


def saved_queries() -> list[dict]:
    """The dashboard's outputs as saved-query bodies (``POST /api/queries``)."""
    return [
        {
            "name": q["name"],
            "sql": q["sql"],
            "params": _PARAMS,
            "outputs": q["outputs"],
            "refresh": "5s",
        }
        for q in QUERIES
    ]


def demo_dir(settings: Settings) -> Path:
    """Where the demo keeps its cxd.yml, data files and token."""
    return settings.home / "demo"


def factory_url(database_url: str) -> str:
    """The URL of the factory's own database on the same Postgres server as cxd's."""
    return urlparse(database_url)._replace(path="/" + FACTORY_DB).geturl()


def odbc_connection_string(url: str) -> str:
    """A psqlODBC connection string for the Postgres database at ``url``."""
    from plugins.odbc import installed_driver, postgres_connection_string

    driver = installed_driver("postgres")
    if driver is None:
        raise ConfigError(
            "the demo reads production data over ODBC and needs psqlODBC:"
            " run scripts/system-deps.sh as root (Debian package odbc-postgresql)"
        )
    return postgres_connection_string(url, driver)


def mqtt_broker() -> tuple[str, int] | None:
    """(host, port) of the MQTT broker named by ``CXD_DEMO_MQTT`` if it answers, else None."""
    value = os.environ.get("CXD_DEMO_MQTT", "127.0.0.1:1883").strip()
    if value.lower() in ("", "off", "none", "0"):
        return None
    host, _, port = value.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return host or "127.0.0.1", int(port)
    except (OSError, ValueError):
        return None


def demo_sources(folder: Path, odbc: str, broker: tuple[str, int] | None) -> dict:
    """The demo's ``cxd.yml``: production over ODBC, the shift sheet, the sensor stream."""
    sensor_columns = [
        {"name": "event_id", "type": "text"},
        {"name": "product_id", "type": "text"},
        {"name": "machine", "type": "text"},
        {"name": "shift", "type": "text"},
        {"name": "class_faults", "type": "integer"},
        {"name": "temperature", "type": "double precision"},
        {"name": "vibration", "type": "double precision"},
        {"name": "measured_at", "type": "timestamptz"},
    ]
    sensor = {
        "name": "sensor",
        "type": "webhook",
        "kind": "time_series",
        "description": "one event per product made: class faults and measurements",
        "options": {"event_id": "event_id"},
        "columns": sensor_columns,
        "key": ["event_id", "measured_at"],
        "time_column": "measured_at",
    }
    if broker:
        sensor["type"] = "mqtt"
        sensor["options"] = {
            "host": broker[0],
            "port": broker[1],
            "topics": ["factory/sensors/#"],
            "event_id": "event_id",
        }
    return {
        "sources": [
            {
                "name": "production",
                "type": "odbc",
                "kind": "time_series",
                "description": "which machine made which product when (factory database, ODBC)",
                "options": {
                    "query": "SELECT product_id, machine, product, shift, made_at FROM production"
                    " WHERE made_at > ? ORDER BY made_at",
                    "cursor_column": "made_at",
                    "initial_cursor": "1970-01-01T00:00:00+00:00",
                },
                "secrets": {"connection_string": odbc},
                "columns": [
                    {"name": "product_id", "type": "text"},
                    {"name": "machine", "type": "text"},
                    {"name": "product", "type": "text"},
                    {"name": "shift", "type": "text"},
                    {"name": "made_at", "type": "timestamptz"},
                ],
                "key": ["product_id", "made_at"],
                "time_column": "made_at",
                "schedule": {"every": "10s"},
            },
            {
                "name": "shifts",
                "type": "file",
                "kind": "time_series",
                "description": "the shift hand-over sheet (Excel)",
                "options": {
                    "path": str(folder / "data" / "shifts" / "*.xlsx"),
                    "format": "xlsx",
                    "after": "keep",
                },
                "columns": [
                    {"name": "shift_id", "type": "text"},
                    {"name": "shift", "type": "text"},
                    {"name": "starts_at", "type": "timestamptz"},
                    {"name": "ends_at", "type": "timestamptz"},
                    {"name": "supervisor", "type": "text"},
                ],
                "key": ["shift_id", "starts_at"],
                "time_column": "starts_at",
                "schedule": {"every": "30s"},
            },
            sensor,
        ]
    }


def _factory(settings: Settings, emit, rate_scale: float) -> Factory:
    return Factory(
        factory_url(settings.database_url),
        demo_dir(settings) / "data" / "shifts" / "handover.xlsx",
        emit,
        rate_scale=rate_scale,
    )


def _ensure_factory_database(database_url: str) -> None:
    import psycopg2

    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (FACTORY_DB,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{FACTORY_DB}"')
    finally:
        admin.close()


def _forget_demo_data(stores) -> None:
    """Reset cxd's copies of the demo sources: tables, watermarks, cursors, live events."""
    from batch.tables import drop_dataset
    from cxd.catalog import delete_source
    from cxd.errors import NotFound
    from speed.stream import forget

    for name in DATASETS:
        drop_dataset(stores.db, name)
        forget(stores.redis, name)
        try:
            delete_source(stores.db, name)
        except NotFound:
            pass


def _save_page(stores) -> bool:
    """Store the dashboard page if this build serves pages; True when stored."""
    try:
        from serving.pages import save_page
    except ImportError:
        return False
    save_page(stores, PAGE)
    return True


def prepare_demo(settings: Settings) -> Settings:
    """Reset and fill the factory's sources, declare them, load them once, save the
    dashboard's queries and page, and print where to look."""
    from batch.jobs import execute_run
    from batch.runs import create_run
    from cxd.auth import create_token
    from cxd.bootstrap import prepare, sync_config
    from cxd.stores import open_stores
    from query_router.saved import save_query
    from speed.stream import append

    settings = prepare(settings)
    folder = demo_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    broker = mqtt_broker()
    odbc = odbc_connection_string(factory_url(settings.database_url))
    (folder / "cxd.yml").write_text(
        yaml.safe_dump(demo_sources(folder, odbc, broker), sort_keys=False)
    )
    (folder / "cxd.yml").chmod(0o600)  # it holds the ODBC connection string
    settings = replace(settings, config_file=folder / "cxd.yml")
    _ensure_factory_database(settings.database_url)
    stores = open_stores(settings, application_name="cxd-demo")
    try:
        _forget_demo_data(stores)
        sync_config(settings)
        print("cxd demo: filling two weeks of factory history ...", flush=True)
        emit = lambda events: append(stores.redis, "sensor", events)  # noqa: E731
        made = _factory(settings, emit, HISTORY_SCALE).reset()
        print(f"cxd demo: {made} products made in the last two weeks", flush=True)
        for name in ("production", "shifts"):
            run = execute_run(stores, create_run(stores.db, name))
            print(f"cxd demo: loaded {name}: run {run['id']} {run['status']}", flush=True)
        for body in saved_queries():
            save_query(stores, body)
        has_page = _save_page(stores)
        token_file = folder / "admin.token"
        if not token_file.exists():
            token_file.write_text(create_token(stores.db, "admin", "demo"))
            token_file.chmod(0o600)
        token = token_file.read_text().strip()
    finally:
        stores.close()
    base = f"http://{settings.host}:{settings.port}"
    print(f"cxd demo: sensor events arrive over {'MQTT' if broker else 'the webhook'}")
    if has_page:
        print(f"cxd demo: open the live dashboard at {base}/dashboards/factory?token={token}")
    print("cxd demo: or ask for one output over REST:")
    print(f"  curl -H 'Authorization: Bearer {token}' {base}/api/queries/parts_per_machine/results")
    print(f"  (the admin token is also in {token_file})", flush=True)
    return settings


def feed(settings: Settings, interval: float = TICK_SECONDS) -> int:
    """Keep the factory producing until stopped: products, sensor events, the shift sheet."""
    import psycopg2

    folder = demo_dir(settings)
    config = yaml.safe_load((folder / "cxd.yml").read_text())
    sensor = next(s for s in config["sources"] if s["name"] == "sensor")
    emit = None
    if sensor["type"] == "mqtt":
        emit = mqtt_emitter(sensor["options"]["host"], int(sensor["options"]["port"]))
    if emit is None:
        token = (folder / "admin.token").read_text().strip()
        url = f"http://{settings.host}:{settings.ingest_port}/hooks/sensor"
        post = webhook_emitter(url, token)

        def emit(events: list[dict]) -> None:
            for _ in range(60):  # cxd-ingest may still be starting
                try:
                    return post(events)
                except OSError as exc:
                    print(f"demo feed: waiting for cxd-ingest ({type(exc).__name__})", flush=True)
                    time.sleep(1)
            raise RuntimeError("cxd-ingest did not accept sensor events for a minute")

    factory = _factory(settings, emit, LIVE_SCALE)
    with psycopg2.connect(factory.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(made_at) FROM production")
        factory.clock = cur.fetchone()[0] or datetime.now(UTC)
    running = {"on": True}
    signal.signal(signal.SIGTERM, lambda *_: running.update(on=False))
    made = ticks = 0
    while running["on"]:
        made += factory.tick()
        ticks += 1
        if ticks % 15 == 0:
            print(f"demo feed: {made} products made since start", flush=True)
        time.sleep(interval)
    return 0


def describe() -> str:
    """The demo's page and queries as JSON (for the docs)."""
    return json.dumps({"page": PAGE, "queries": saved_queries()}, indent=2)

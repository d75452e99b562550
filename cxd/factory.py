"""The demo factory: machines on shifts making products, as three real sources.

- production records (which machine made which product when) in a separate Postgres
  database, ``factory.production``, read by cxd over ODBC;
- the shift hand-over sheet, an Excel file naming the current shift, read by the file plugin;
- a live sensor stream, one event per product with its class faults and measurements,
  published over MQTT when a broker is reachable and POSTed to the webhook otherwise.

``Factory.reset`` fills the last two weeks; ``Factory.tick`` makes the products of the
time since the last tick and prunes what is older than the retention, so nothing grows
without bound.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.extras

MACHINES = ["press-1", "press-2", "lathe-1", "mill-1"]
PRODUCTS = ["bracket", "housing", "shaft", "flange"]
SHIFTS = [("early", 6), ("late", 14), ("night", 22)]  # name, start hour (UTC), 8 hours each
RATE_PER_HOUR = {"press-1": 30, "press-2": 24, "lathe-1": 12, "mill-1": 18}


def shift_at(at: datetime) -> tuple[str, datetime, datetime]:
    """The shift running at ``at``: (name, start, end)."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    for name, hour in reversed(SHIFTS):
        start = day + timedelta(hours=hour)
        if at >= start:
            return name, start, start + timedelta(hours=8)
    name, hour = SHIFTS[-1]
    start = day - timedelta(days=1) + timedelta(hours=hour)
    return name, start, start + timedelta(hours=8)


@dataclass
class Factory:
    """A simulated factory writing to its three sources."""

    database_url: str
    shifts_file: Path
    emit: Callable[[list[dict]], None]
    retention: timedelta = timedelta(days=14)
    #: multiplies every machine's rate (the demo runs a busier factory than the default)
    rate_scale: float = 1.0
    rng: random.Random = field(default_factory=lambda: random.Random(42))
    clock: datetime | None = None

    def _connect(self):
        conn = psycopg2.connect(self.database_url)
        conn.autocommit = True
        return conn

    def reset(self, now: datetime | None = None) -> int:
        """Recreate every source and fill it with the last ``retention`` of production."""
        now = now or datetime.now(UTC)
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS production")
            cur.execute(
                "CREATE TABLE production (product_id text PRIMARY KEY, machine text NOT NULL,"
                " product text NOT NULL, shift text NOT NULL, made_at timestamptz NOT NULL)"
            )
            cur.execute("CREATE INDEX ON production (made_at)")
        self.clock = now - self.retention
        return self.tick(now)

    def _products(self, start: datetime, end: datetime) -> list[dict]:
        rows = []
        for machine, base_rate in RATE_PER_HOUR.items():
            per_hour = base_rate * self.rate_scale
            at = start + timedelta(seconds=self.rng.expovariate(per_hour / 3600))
            while at < end:
                rows.append(
                    {
                        "product_id": f"{machine[:1].upper()}{int(at.timestamp() * 1000)}",
                        "machine": machine,
                        "product": self.rng.choice(PRODUCTS),
                        "shift": shift_at(at)[0],
                        "made_at": at,
                    }
                )
                at += timedelta(seconds=self.rng.expovariate(per_hour / 3600))
        return sorted(rows, key=lambda r: r["made_at"])

    def _sensor_event(self, product: dict) -> dict:
        faults = self.rng.choices([0, 1, 2, 3, 4, 5], weights=[60, 15, 10, 7, 5, 3])[0]
        return {
            "event_id": f"S-{product['product_id']}",
            "product_id": product["product_id"],
            "machine": product["machine"],
            "shift": product["shift"],
            "class_faults": faults,
            "temperature": round(self.rng.gauss(62 + 4 * faults, 2.5), 2),
            "vibration": round(abs(self.rng.gauss(0.8 + 0.3 * faults, 0.2)), 3),
            "measured_at": (product["made_at"] + timedelta(seconds=2)).isoformat(),
        }

    def write_shift_sheet(self, now: datetime) -> None:
        """The hand-over sheet: the current shift, its name, start and end."""
        from openpyxl import Workbook

        name, start, end = shift_at(now)
        book = Workbook()
        sheet = book.active
        sheet.title = "handover"
        sheet.append(["shift_id", "shift", "starts_at", "ends_at", "supervisor"])
        supervisor = {"early": "A. Meyer", "late": "B. Okafor", "night": "C. Lindqvist"}[name]
        sheet.append(
            [f"{start:%Y%m%d}-{name}", name, start.isoformat(), end.isoformat(), supervisor]
        )
        self.shifts_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.shifts_file.with_suffix(".tmp")
        book.save(tmp)
        tmp.replace(self.shifts_file)  # readers never see a half-written file

    def tick(self, now: datetime | None = None) -> int:
        """Make the products since the last tick, emit their sensor events, prune old rows."""
        now = now or datetime.now(UTC)
        start = self.clock or now
        products = self._products(start, now)
        if products:
            with self._connect() as conn, conn.cursor() as cur:
                psycopg2.extras.execute_values(
                    cur,
                    "INSERT INTO production (product_id, machine, product, shift, made_at) VALUES %s"
                    " ON CONFLICT DO NOTHING",
                    [
                        (p["product_id"], p["machine"], p["product"], p["shift"], p["made_at"])
                        for p in products
                    ],
                )
            events = [self._sensor_event(p) for p in products]
            for i in range(0, len(events), 1000):
                self.emit(events[i : i + 1000])
        if shift_at(start)[0] != shift_at(now)[0] or not self.shifts_file.exists():
            self.write_shift_sheet(now)
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM production WHERE made_at < %s", (now - self.retention,))
        self.clock = now
        return len(products)


def webhook_emitter(url: str, token: str) -> Callable[[list[dict]], None]:
    """Emit sensor events as one POST of a JSON array to the webhook receiver."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def emit(events: list[dict]) -> None:
        response = session.post(
            url, data=json.dumps(events), headers={"Content-Type": "application/json"}, timeout=30
        )
        response.raise_for_status()

    return emit


def mqtt_emitter(
    host: str, port: int, topic: str = "factory/sensors"
) -> Callable[[list[dict]], None] | None:
    """Emit sensor events over MQTT (QoS 1, one message per event); None if no broker answers."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"cxd-demo-factory-{random.randrange(1 << 30)}"
    )
    try:
        client.connect(host, port, keepalive=30)
    except OSError:
        return None
    client.loop_start()

    def emit(events: list[dict]) -> None:
        infos = [client.publish(f"{topic}/{e['machine']}", json.dumps(e), qos=1) for e in events]
        for info in infos:
            info.wait_for_publish(timeout=30)

    return emit

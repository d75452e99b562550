"""The demo factory fills two weeks of production, keeps producing, and prunes old rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse, urlunparse

import psycopg2
import pytest
from openpyxl import load_workbook

from cxd.factory import RATE_PER_HOUR, Factory, shift_at


@pytest.fixture
def factory_db(store_urls):
    server = store_urls[0]
    name = f"factory_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield urlunparse(urlparse(server)._replace(path="/" + name))
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def rows(url: str, sql: str):
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_reset_fills_two_weeks_and_tick_keeps_going(factory_db, tmp_path):
    events: list[dict] = []
    now = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    factory = Factory(factory_db, tmp_path / "shifts" / "handover.xlsx", events.extend)
    made = factory.reset(now)

    [(count, first, last)] = rows(
        factory_db, "SELECT count(*), min(made_at), max(made_at) FROM production"
    )
    expected = sum(RATE_PER_HOUR.values()) * 24 * 14
    assert count == made and 0.9 * expected < count < 1.1 * expected
    assert first >= now - timedelta(days=14) and last < now
    assert len(events) == count and len({e["event_id"] for e in events}) == count
    assert {e["shift"] for e in events} == {"early", "late", "night"}
    assert {e["product_id"] for e in events} == {
        r[0] for r in rows(factory_db, "SELECT product_id FROM production")
    }

    sheet = list(load_workbook(tmp_path / "shifts" / "handover.xlsx").active.values)
    assert sheet[0][:2] == ("shift_id", "shift") and sheet[1][1] == "late"  # 14:00-22:00

    later = now + timedelta(hours=7)  # into the night shift
    added = factory.tick(later)
    assert added > 0 and len(events) == count + added
    sheet = list(load_workbook(tmp_path / "shifts" / "handover.xlsx").active.values)
    assert sheet[1][1] == "night"
    [(oldest,)] = rows(factory_db, "SELECT min(made_at) FROM production")
    assert oldest >= later - timedelta(days=14)  # pruned to the retention


@pytest.mark.parametrize(
    ("hour", "name"),
    [(5, "night"), (6, "early"), (13, "early"), (14, "late"), (22, "night"), (23, "night")],
)
def test_shift_at(hour, name):
    at = datetime(2026, 11, 20, hour, 59, tzinfo=UTC)
    shift, start, end = shift_at(at)
    assert shift == name and start <= at < end and end - start == timedelta(hours=8)

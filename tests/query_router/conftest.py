"""Fixtures of the query router's tests: declared datasets with rows in both layers, and
the SQL fixture files (entries separated by lines of four dashes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.load import load_rows
from query_router.read_speed import forget_speed_state
from speed.stream import append
from tests.helpers import declare_source

FIXTURES = Path(__file__).parent / "fixtures"


def read_entries(name: str) -> list[str]:
    """The SQL entries of a fixture file (its leading comment block dropped)."""
    text = (FIXTURES / name).read_text()
    return [e.strip() for e in text.split("\n----\n")[1:] if e.strip()]


def declare(stores, **body):
    """Declare a source, create its tables and return its spec."""
    return declare_source(stores, body)


WEATHER = {
    "name": "weather",
    "type": "webhook",
    "kind": "time_series",
    "columns": [
        {"name": "origin", "type": "text"},
        {"name": "time_hour", "type": "timestamptz"},
        {"name": "temp", "type": "double precision"},
    ],
    "time_column": "time_hour",
}
LEVELS = {
    "name": "levels",
    "type": "webhook",
    "kind": "instantaneous",
    "columns": [
        {"name": "station", "type": "text"},
        {"name": "level", "type": "double precision"},
        {"name": "at", "type": "timestamptz"},
    ],
    "key": ["station"],
    "time_column": "at",
}
SITES = {
    "name": "sites",
    "type": "file",
    "kind": "point_in_time",
    "options": {"path": "/nonexistent/*.csv"},
    "columns": [
        {"name": "site", "type": "text"},
        {"name": "city", "type": "text"},
        {"name": "opened", "type": "date"},
    ],
    "key": ["site"],
}


@pytest.fixture(autouse=True)
def fresh_router_process():
    """Each test's database starts empty, as if this process had never read one."""
    forget_speed_state()
    yield


@pytest.fixture
def corpus(stores):
    """weather (raw + speed rows), levels (latest values in Redis), sites (raw only)."""
    weather = declare(stores, **WEATHER)
    levels = declare(stores, **LEVELS)
    sites = declare(stores, **SITES)
    load_rows(
        stores.db,
        weather,
        [
            {"origin": "EWR", "time_hour": "2026-05-05T10:00:00Z", "temp": 12.5},
            {"origin": "JFK", "time_hour": "2026-05-05T10:00:00Z", "temp": 11.0},
            {"origin": "S1", "time_hour": "2026-05-05T11:00:00Z", "temp": 21.0},
        ],
    )
    append(
        stores.redis,
        "weather",
        [
            {"origin": "LGA", "time_hour": "2026-05-05T11:00:00Z", "temp": 14.25},
            {"origin": "EWR", "time_hour": "2026-05-05T12:00:00Z", "temp": 13.0},
        ],
    )
    events = [
        {"station": "S1", "level": 1.5, "at": "2026-05-05T10:00:00Z"},
        {"station": "S2", "level": 2.5, "at": "2026-05-05T10:00:00Z"},
    ]
    load_rows(stores.db, levels, events)
    append(stores.redis, "levels", events, key_columns=["station"])
    load_rows(
        stores.db,
        sites,
        [
            {"site": "S1", "city": "Newark", "opened": "2025-01-01"},
            {"site": "S2", "city": "Queens", "opened": "2026-02-01"},
        ],
    )
    return stores

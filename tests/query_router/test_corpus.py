"""Invariant 5 over corpora: hostile SQL is refused (by the router with a 400, and by
Postgres itself when validation is bypassed) with no side effect; analytic SQL runs."""

from __future__ import annotations

import glob

import pytest

from cxd.errors import CxdError
from query_router.execute import run_as_analyst
from tests.query_router.conftest import read_entries

HOSTILE = read_entries("hostile.sql")
CATALOG = read_entries("catalog_reads.sql")
LEGIT = read_entries("legit.sql")


def state(stores) -> dict:
    """Everything a hostile statement might have changed."""
    db = stores.db
    return {
        "relations": db.fetchall(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'"
            " ORDER BY 1, 2"
        ),
        "weather": db.fetchall("SELECT origin, time_hour, temp FROM raw.weather ORDER BY 1, 2"),
        "levels": db.fetchall("SELECT * FROM raw.levels ORDER BY station, at"),
        "columns": db.fetchall(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'raw' ORDER BY 1, 2"
        ),
        "tokens": db.fetchall("SELECT * FROM cxd.tokens ORDER BY id"),
        "sources": db.fetchall("SELECT name, spec FROM cxd.sources ORDER BY name"),
        "watermarks": db.fetchall("SELECT dataset, stream_id FROM cxd.watermarks ORDER BY 1"),
        "roles": db.fetchall("SELECT rolname, rolsuper FROM pg_roles ORDER BY 1"),
        "grants": db.fetchall(
            "SELECT table_name, grantee, privilege_type FROM information_schema.table_privileges"
            " WHERE table_schema = 'raw' ORDER BY 1, 2, 3"
        ),
        "extensions": db.fetchall("SELECT extname FROM pg_extension ORDER BY 1"),
        "large_objects": db.fetchall("SELECT count(*) AS n FROM pg_largeobject_metadata"),
        "files": sorted(glob.glob("/tmp/cxd_pwned*")),
        "stream": stores.redis.xlen("cxd:{weather}:log"),
    }


def test_corpora_are_big_enough():
    assert len(HOSTILE) >= 300
    assert len(LEGIT) >= 100


def test_hostile_sql_is_rejected_with_400_and_changes_nothing(corpus, client, auth):
    headers = auth("analyst")
    before = state(corpus)
    accepted = []
    for sql in HOSTILE + CATALOG:
        r = client.post("/api/sql", json={"sql": sql}, headers=headers)
        body = r.get_json()
        if r.status_code != 400 or body["error"]["code"] not in ("bad_query", "bad_parameter"):
            accepted.append((sql, r.status_code, body))
    assert accepted == []
    assert state(corpus) == before


def test_rejections_name_line_and_column(corpus, client, auth):
    r = client.post(
        "/api/sql",
        json={"sql": "SELECT origin,\n       pg_sleep(10)\nFROM weather"},
        headers=auth("analyst"),
    )
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert error["details"]["line"] == 2 and error["details"]["column"] == 15
    assert "pg_sleep" in error["message"] and "line 2" in error["message"]


# why Postgres refuses: not one SELECT (syntax, several statements, data-modifying WITH),
# no privilege, read-only transaction, or a function that does not exist (dblink)
REFUSALS = {"42601", "0A000", "42501", "25006", "42883"}


def test_hostile_sql_fails_at_the_database_when_validation_is_bypassed(corpus):
    before = state(corpus)
    succeeded, other = [], []
    for sql in HOSTILE:
        try:
            run_as_analyst(corpus, sql, timeout_ms=2000)
        except CxdError as exc:
            if (exc.details or {}).get("sqlstate") not in REFUSALS:
                other.append((sql, exc.message))
            continue
        succeeded.append(sql)
    assert succeeded == []
    assert other == []
    assert state(corpus) == before


def test_analyst_role_reads_raw_tables_created_after_the_migration(corpus):
    result = run_as_analyst(corpus, "SELECT count(*) AS n FROM raw.weather")
    assert result["rows"] == [{"n": 3}]
    with pytest.raises(CxdError, match="permission denied"):
        run_as_analyst(corpus, "SELECT count(*) FROM cxd.tokens")


def test_legitimate_sql_is_answered(corpus, client, auth):
    headers = auth("analyst")
    refused = []
    for sql in LEGIT:
        r = client.post("/api/sql", json={"sql": sql}, headers=headers)
        body = r.get_json()
        if r.status_code != 200 or body["freshness"]["plan"] not in ("batch", "speed", "merge"):
            refused.append((sql, r.status_code, body))
    assert refused == []


def test_catalog_reads_that_bypass_validation_show_names_at_most(corpus):
    """Postgres lets every role read most of its catalog; as the analyst, what a catalog
    read returns is names, never data of cxd's own tables or other sessions' SQL."""
    outcome = {}
    for sql in CATALOG:
        try:
            outcome[sql] = run_as_analyst(corpus, sql, timeout_ms=2000)["rows"]
        except CxdError as exc:
            outcome[sql] = exc.details.get("sqlstate") if exc.details else exc.message
    cxd_columns = "SELECT table_name FROM information_schema.columns WHERE table_schema = 'cxd'"
    assert outcome[cxd_columns] == []  # information_schema lists only readable tables
    assert outcome["SELECT CAST('cxd.tokens' AS regclass)"] == "42501"  # no USAGE on cxd
    assert outcome["SELECT has_table_privilege('cxd.tokens', 'SELECT')"] == "42501"
    assert outcome["SELECT pg_get_viewdef('pg_roles')"] == "42501"
    activity = outcome["SELECT * FROM pg_catalog.pg_stat_activity"]
    assert activity and {r["query"] for r in activity} <= {None, "", "<insufficient privilege>"}
    roles = outcome["SELECT * FROM pg_catalog.pg_roles"]
    assert {r["rolpassword"] for r in roles} <= {None, "********"}

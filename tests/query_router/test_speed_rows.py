"""Speed rows reach Postgres as arrays with the values a JSON document would give them."""

from __future__ import annotations

import json

import psycopg

from query_router.speed_rows import BinaryArray, register, row_arrays, unnest_sql

COLUMNS = [
    ("s", "text"),
    ("i", "integer"),
    ("b", "bigint"),
    ("f", "double precision"),
    ("n", "numeric"),
    ("ok", "boolean"),
    ("at", "timestamptz"),
    ("local", "timestamp"),
    ("day", "date"),
    ("doc", "jsonb"),
]
PLAIN = {
    "s": 'a "quoted" \\ back,slash {x}',
    "i": -7,
    "b": 2**40,
    "f": 0.1,
    "n": 12.5,
    "ok": True,
    "at": "2026-05-05T10:00:00.123456+02:00",
    "local": "2026-05-05T10:00:00",
    "day": "2026-05-05",
    "doc": {"a": [1, 2]},
}
ODD = {  # values only Postgres's input functions read: their column goes as text
    "s": 15,
    "i": "8",
    "b": "12",
    "f": "1e3",
    "n": "3.14159265358979323846",
    "ok": "yes",
    "at": "May 5 2026 10:00 UTC",
    "local": "May 5 2026 11:00",
    "day": "2026-05-05T23:00:00Z",
    "doc": None,
}


def _typed(conn, params):
    sql = f"SELECT * FROM {unnest_sql(COLUMNS, 1)}"
    with psycopg.RawCursor(conn) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _via_json(conn, rows):
    typed = ", ".join(f"{n} {t}" for n, t in COLUMNS)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT *, (row_number() OVER () - 1)::bigint"
            f" FROM jsonb_to_recordset(%s::jsonb) AS _s({typed})",
            (json.dumps(rows),),
        )
        return cur.fetchall()


def test_arrays_type_values_as_json_would(settings):
    rows = [PLAIN, ODD, {name: None for name, _ in COLUMNS}, PLAIN]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        register(conn)
        params = row_arrays(COLUMNS, rows)
        assert _typed(conn, params) == _via_json(conn, rows)
        # plain values went as binary arrays; a column with an odd value as text
        plain = row_arrays(COLUMNS, [PLAIN])
        binary = {
            name for (name, _), p in zip(COLUMNS, plain, strict=False) if isinstance(p, BinaryArray)
        }
        assert binary == {"s", "i", "b", "f", "ok", "at", "local", "day"}
        assert not any(isinstance(p, BinaryArray) for p in params[:-1])
        assert _typed(conn, row_arrays(COLUMNS, [])) == []

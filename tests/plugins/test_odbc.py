"""The ODBC source against real drivers: psqlODBC on Postgres, MariaDB Connector/ODBC on MariaDB."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
import uuid
from urllib.parse import urlparse

import pytest

from batch.jobs import execute_run
from batch.load import get_watermark
from cxd.catalog import get_source, parse_source
from plugins.exceptions import PluginConfigError
from plugins.odbc import OdbcSource, installed_driver
from plugins.registry import plugin_for
from tests.plugins.sources import declare, pg_source, raw_rows, run  # noqa: F401

pytestmark = pytest.mark.odbc

COLUMNS = [
    {"name": "id", "type": "integer"},
    {"name": "status", "type": "text"},
    {"name": "amount", "type": "numeric"},
    {"name": "updated_at", "type": "timestamptz"},
]


def orders_source(conn_string: str, **options):
    return {
        "name": "orders",
        "type": "odbc",
        "kind": "time_series",
        "options": {
            "query": "SELECT id, status, amount, updated_at FROM orders"
            " WHERE updated_at > ? ORDER BY updated_at",
            "cursor_column": "updated_at",
            "initial_cursor": "1970-01-01T00:00:00",
            "chunk_size": 2,
            **options,
        },
        "secrets": {"connection_string": conn_string},
        "columns": COLUMNS,
        "key": ["id", "updated_at"],
        "time_column": "updated_at",
    }


def make_orders(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2),"
            " updated_at timestamp NOT NULL)"
        )
        cur.execute(
            "INSERT INTO orders VALUES (1, 'new', 10.50, '2026-05-05 10:00'),"
            " (2, 'paid', 20.00, '2026-05-05 11:00'), (3, 'new', 5.25, '2026-05-05 12:00')"
        )


def test_postgres_incremental_loads_only_new_rows(stores, pg_source):  # noqa: F811
    conn, conn_string, _ = pg_source
    make_orders(conn)
    declare(stores, orders_source(conn_string))

    first = run(stores, "orders")
    assert first["status"] == "succeeded", first["error"]
    assert first["rows_fetched"] == 3
    rows = raw_rows(stores, "orders", "id")
    assert [(r["id"], r["status"], str(r["amount"])) for r in rows] == [
        (1, "new", "10.50"),
        (2, "paid", "20.00"),
        (3, "new", "5.25"),
    ]
    assert rows[0]["updated_at"].isoformat() == "2026-05-05T10:00:00+00:00"
    cursor = get_watermark(stores.db, "orders")["cursor"]
    assert cursor["value"] == "2026-05-05T12:00:00"

    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO orders VALUES (4, 'new', 7.00, '2026-05-06 09:00'),"
            " (5, 'new', 8.00, '2026-05-06 10:00')"
        )
        cur.execute(
            "UPDATE orders SET status = 'shipped', updated_at = '2026-05-06 11:00' WHERE id = 1"
        )
    second = run(stores, "orders")
    assert second["status"] == "succeeded", second["error"]
    assert second["rows_fetched"] == 3  # only rows changed since the cursor were read
    rows = raw_rows(stores, "orders", "updated_at")
    assert [(r["id"], r["status"]) for r in rows] == [
        (1, "new"),
        (2, "paid"),
        (3, "new"),
        (4, "new"),
        (5, "new"),
        (1, "shipped"),
    ]
    assert run(stores, "orders")["rows_fetched"] == 0  # nothing new: nothing read


def test_a_dsn_with_user_and_password_secret(stores, pg_source, tmp_path, monkeypatch):  # noqa: F811
    conn, conn_string, _ = pg_source
    make_orders(conn)
    settings = dict(part.split("=", 1) for part in conn_string.strip(";").split(";"))
    ini = tmp_path / "odbc.ini"
    ini.write_text(
        "[orders_db]\n"
        f"Driver = {settings['Driver'].strip('{}')}\n"
        f"Servername = {settings['Server']}\nPort = {settings['Port']}\n"
        f"Database = {settings['Database']}\n"
    )
    monkeypatch.setenv("ODBCINI", str(ini))  # unixODBC reads user DSNs from this file
    body = orders_source("", dsn="orders_db", user="postgres", password="pw-not-needed")
    body.pop("secrets")
    spec = declare(stores, body)
    assert spec.secrets == {"password": "pw-not-needed"}
    result = run(stores, "orders")
    assert result["status"] == "succeeded", result["error"]
    assert result["rows_fetched"] == 3


def test_cxd_run_loads_an_odbc_source(stores, settings, pg_source, capsys):  # noqa: F811
    from cxd.cli import build_parser

    conn, conn_string, _ = pg_source
    make_orders(conn)
    declare(stores, orders_source(conn_string))
    args = build_parser().parse_args(["run", "orders"])
    assert args.fn(args) == 0, capsys.readouterr().err
    assert "3 rows fetched" in capsys.readouterr().out
    assert len(raw_rows(stores, "orders", "id")) == 3


def test_chunks_keep_memory_flat(stores, pg_source):  # noqa: F811
    conn, conn_string, _ = pg_source
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE big AS SELECT i AS id, md5(i::text) AS status, i * 1.5 AS amount,"
            " timestamp '2026-01-01' + i * interval '1 second' AS updated_at"
            " FROM generate_series(1, 40000) i"
        )

    def peak_while_fetching(rows: int) -> tuple[int, int]:
        # UseDeclareFetch: psqlODBC reads through a server-side cursor instead of all at once
        body = orders_source(
            conn_string + "UseDeclareFetch=1;Fetch=1000;",
            chunk_size=1000,
            query=f"SELECT * FROM big WHERE id <= {rows} AND updated_at > ?",
        )
        plugin = OdbcSource(parse_source(body))
        tracemalloc.start()
        chunks = 0
        for payload in plugin.fetch(None):
            chunks += 1
            assert payload.meta["rows"] == 1000
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return chunks, peak

    small_chunks, small_peak = peak_while_fetching(4000)
    big_chunks, big_peak = peak_while_fetching(40000)
    assert (small_chunks, big_chunks) == (4, 40)
    # ten times the rows, about the same memory: one chunk is held at a time
    assert big_peak < small_peak * 1.5, (small_peak, big_peak)


def test_postgres_types_map_to_declared_columns(stores, pg_source):  # noqa: F811
    conn, conn_string, _ = pg_source
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE kinds (i int, b bigint, n numeric(8,3), f float8, t text, ok boolean,"
            " d date, ts timestamptz, u uuid, raw bytea)"
        )
        cur.execute(
            "INSERT INTO kinds VALUES (1, 9000000000, 3.125, 2.5, 'x', true, '2026-05-05',"
            " '2026-05-05 10:00+02', '6f1c2d4e-0000-4000-8000-000000000001', '\\x0102')"
        )
    body = {
        "name": "kinds",
        "type": "odbc",
        "kind": "time_series",
        "options": {"query": "SELECT * FROM kinds", "timezone": "Europe/Paris"},
        "secrets": {"connection_string": conn_string + "BoolsAsChar=0;"},
        "columns": [{"name": "i", "type": "integer"}],
        "time_column": None,
    }
    probe = OdbcSource(parse_source({**body, "kind": "point_in_time", "key": ["i"]}))
    described = {c["name"]: c["type"] for c in probe.describe()}
    assert described == {
        "i": "integer",
        "b": "bigint",
        "n": "numeric",
        "f": "double precision",
        "t": "text",
        "ok": "boolean",
        "d": "date",
        "ts": "timestamp",
        "u": "text",  # psqlODBC hands uuids over as strings
        "raw": "text",
    }
    declared = [{"name": k, "type": v} for k, v in described.items()]
    declared[7]["type"] = "timestamptz"
    declared[8]["type"] = "uuid"
    declare(stores, {**body, "kind": "point_in_time", "key": ["i"], "columns": declared})
    result = run(stores, "kinds")
    assert result["status"] == "succeeded", result["error"]
    (row,) = raw_rows(stores, "kinds", "i")
    assert row["b"] == 9000000000 and str(row["n"]) == "3.125" and row["f"] == 2.5
    assert row["ok"] is True and str(row["d"]) == "2026-05-05"
    assert row["ts"].isoformat() == "2026-05-05T08:00:00+00:00"
    assert str(row["u"]) == "6f1c2d4e-0000-4000-8000-000000000001"
    assert row["raw"] == "\\x0102"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_fails_the_run_and_keeps_raw(stores, pg_source, caplog):  # noqa: F811
    conn, conn_string, _ = pg_source
    make_orders(conn)
    declare(stores, orders_source(conn_string))
    assert run(stores, "orders")["status"] == "succeeded"
    before = raw_rows(stores, "orders", "id")
    cursor = get_watermark(stores.db, "orders")["cursor"]

    body = orders_source("", login_timeout="3s")
    body["secrets"] = {"password": "s3cret-Passw0rd"}
    body["options"].update(
        driver=installed_driver("postgres"),
        server="127.0.0.1",
        port=free_port(),
        database="nothere",
        user="postgres",
    )
    declare(stores, body)
    failed = run(stores, "orders")
    assert failed["status"] == "failed"
    assert failed["error_step"] == "fetch"
    assert "cannot connect to the ODBC database" in failed["error"]
    assert "Connection refused" in failed["error"]
    assert "s3cret-Passw0rd" not in str(failed)
    assert "Connection refused" in caplog.text  # the failure is logged, the password is not
    assert "s3cret-Passw0rd" not in caplog.text
    assert raw_rows(stores, "orders", "id") == before
    assert get_watermark(stores.db, "orders")["cursor"] == cursor


def test_database_killed_mid_query_fails_the_run_and_keeps_raw(stores, pg_source):  # noqa: F811
    conn, conn_string, src_url = pg_source
    make_orders(conn)
    slow = "SELECT id, status, amount, updated_at FROM orders, pg_sleep(5) WHERE updated_at > ?"
    declare(stores, orders_source(conn_string, query=slow, chunk_size=1))
    dbname = urlparse(src_url).path.lstrip("/")

    def kill_when_running():
        deadline = time.monotonic() + 10
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND query LIKE '%%pg_sleep(5)%%' AND pid <> pg_backend_pid()",
                    (dbname,),
                )
                if cur.fetchall():
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    failed = run(stores, "orders")
    killer.join()
    assert failed["status"] == "failed"
    assert failed["error_step"] == "fetch"
    assert "source 'orders'" in failed["error"] and "terminat" in failed["error"]
    assert raw_rows(stores, "orders", "id") == []
    assert get_watermark(stores.db, "orders")["cursor"] is None


def test_query_timeout_stops_a_slow_query(stores, pg_source):  # noqa: F811
    conn, conn_string, _ = pg_source
    make_orders(conn)
    slow = "SELECT id, status, amount, updated_at FROM orders, pg_sleep(10) WHERE updated_at > ?"
    declare(stores, orders_source(conn_string, query=slow, query_timeout="1s"))
    started = time.monotonic()
    failed = run(stores, "orders")
    assert time.monotonic() - started < 8
    assert failed["status"] == "failed"
    assert "statement timeout" in failed["error"]


def test_every_setting_problem_is_reported_at_once(stores):
    spec = parse_source(
        {
            "name": "bad",
            "type": "odbc",
            "options": {
                "query": "SELECT * FROM t WHERE x > ?",
                "chunk_size": 0,
                "login_timeout": "soon",
            },
            "columns": [{"name": "x", "type": "timestamptz"}],
            "time_column": "x",
        }
    )
    with pytest.raises(PluginConfigError) as err:
        plugin_for(spec)
    problems = err.value.details["problems"]
    assert len(problems) == 5, problems
    assert any("options.dsn" in p for p in problems)
    assert any("cursor_column" in p for p in problems)
    assert any("initial_cursor" in p for p in problems)
    assert any("chunk_size" in p for p in problems)
    assert any("login_timeout" in p for p in problems)


def test_a_password_in_the_options_is_refused():
    body = orders_source("")
    body.pop("secrets")
    body["options"]["connection_string"] = "Driver={PostgreSQL Unicode};Server=db;PWD=hunter2;"
    with pytest.raises(PluginConfigError) as err:
        plugin_for(parse_source(body))
    assert err.value.details["problems"] == [
        "options.connection_string holds a password: declare it under secrets"
        " (secrets are never shown or logged; options are)"
    ]


def test_initial_cursor_is_bound_as_the_cursor_column_type(stores, pg_source):  # noqa: F811
    conn, conn_string, _ = pg_source
    make_orders(conn)
    # 12:30 in Paris is 10:30 UTC: rows 2 (11:00) and 3 (12:00) are newer
    declare(stores, orders_source(conn_string, initial_cursor="2026-05-05T12:30:00+02:00"))
    result = run(stores, "orders")
    assert result["status"] == "succeeded", result["error"]
    assert [r["id"] for r in raw_rows(stores, "orders", "id")] == [2, 3]
    declare(stores, orders_source(conn_string, initial_cursor="last tuesday"))
    failed = run(stores, "orders", mode="full")
    assert failed["status"] == "failed"
    assert "options.initial_cursor 'last tuesday' is not a timestamptz" in failed["error"]


def mariadb_running() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 3306), timeout=1).close()
    except OSError:
        return False
    return installed_driver("mariadb") is not None


@pytest.mark.skipif(
    not mariadb_running(), reason="MariaDB (127.0.0.1:3306) or its ODBC driver is not here"
)
def test_mariadb_incremental_load(stores):
    import pyodbc

    base = f"Driver={{{installed_driver('mariadb')}}};Server=127.0.0.1;Port=3306;UID=root;PWD=;"
    name = f"cxd_src_{uuid.uuid4().hex[:10]}"
    admin = pyodbc.connect(base, autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    try:
        admin.execute(
            f"CREATE TABLE {name}.orders (id int PRIMARY KEY, status varchar(20),"
            " amount decimal(10,2), updated_at datetime(3) NOT NULL)"
        )
        admin.execute(
            f"INSERT INTO {name}.orders VALUES (1, 'new', 10.5, '2026-05-05 10:00:00.250'),"
            " (2, 'paid', 20, '2026-05-05 11:00:00')"
        )
        declare(stores, orders_source(base + f"Database={name};"))
        first = run(stores, "orders")
        assert first["status"] == "succeeded", first["error"]
        assert first["rows_fetched"] == 2
        admin.execute(f"INSERT INTO {name}.orders VALUES (3, 'new', 1, '2026-05-05 12:00:00')")
        second = run(stores, "orders")
        assert second["status"] == "succeeded", second["error"]
        assert second["rows_fetched"] == 1
        rows = raw_rows(stores, "orders", "id")
        assert [(r["id"], r["status"], float(r["amount"])) for r in rows] == [
            (1, "new", 10.5),
            (2, "paid", 20.0),
            (3, "new", 1.0),
        ]
        assert rows[0]["updated_at"].isoformat() == "2026-05-05T10:00:00.250000+00:00"
    finally:
        admin.execute(f"DROP DATABASE {name}")
        admin.close()
    assert get_source(stores.db, "orders").secrets["connection_string"].startswith("Driver=")


def test_declared_and_run_through_the_rest_api(stores, pg_source, client, auth):  # noqa: F811
    conn, conn_string, _ = pg_source
    make_orders(conn)
    body = orders_source(conn_string + "PWD=never-sh0wn;")
    created = client.post("/api/sources", json=body, headers=auth("admin"))
    assert created.status_code == 201, created.get_json()
    assert "never-sh0wn" not in created.get_data(as_text=True)
    assert "never-sh0wn" not in client.get("/api/sources/orders", headers=auth()).get_data(
        as_text=True
    )
    started = client.post("/api/sources/orders/runs", json={"mode": "incremental"}, headers=auth())
    assert started.status_code == 202
    # the queued job's work, done here: the rq worker's cached stores would outlive this
    # test's database reset (see the report on tests/conftest.py)
    execute_run(stores, started.get_json()["run_id"])
    result = client.get(f"/api/runs/{started.get_json()['run_id']}", headers=auth("read"))
    assert result.get_json()["status"] == "succeeded", result.get_json()
    assert result.get_json()["rows_loaded"] == 3
    assert "never-sh0wn" not in result.get_data(as_text=True)

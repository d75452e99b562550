"""ODBC SQL: an incremental query run through any unixODBC driver (pyodbc).

A source declares how to connect (a DSN, or a connection string kept as a secret), a
query whose ``?`` placeholders are bound to the last value of a cursor column, and
optional chunk size and timeouts::

    - name: orders
      type: odbc
      kind: point_in_time
      options:
        dsn: erp                       # or driver/server/port/database, or a connection string
        user: reader
        query: SELECT id, status, updated_at FROM orders WHERE updated_at > ? ORDER BY updated_at
        cursor_column: updated_at      # a declared column; its largest value is the next cursor
        initial_cursor: "1970-01-01T00:00:00"
        chunk_size: 5000               # rows per payload (memory stays flat)
        login_timeout: 15s
        query_timeout: 5m
      secrets: {password: "${ERP_PASSWORD}"}

Rows are fetched with ``fetchmany`` and each chunk becomes one compact JSON payload
(``{"columns", "types", "rows"}``), so it can be archived as received and re-ingested.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from plugins.base import Payload, SourcePlugin
from plugins.exceptions import FetchError, PluginConfigError, RecordError
from plugins.parse import seconds, select_columns
from plugins.settings import count_problems, duration_problems

#: Postgres column type for each Python type pyodbc returns (see :func:`postgres_type`)
TYPE_MAP: dict[type, str] = {
    bool: "boolean",
    int: "bigint",
    float: "double precision",
    Decimal: "numeric",
    str: "text",
    dt.datetime: "timestamp",
    dt.date: "date",
    dt.time: "text",
    bytes: "text",
    bytearray: "text",
    uuid.UUID: "uuid",
}
_CURSOR_TYPES = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "int": int,
    "float": float,
    "decimal": Decimal,
    "str": str,
}
_PASSWORD_IN = re.compile(r"(^|;)\s*(PWD|PASSWORD)\s*=", re.I)
_CONNECT_PARTS = (
    ("driver", "Driver"),
    ("server", "Server"),
    ("port", "Port"),
    ("database", "Database"),
    ("user", "UID"),
)


def postgres_type(python_type: type, size: int | None = None) -> str:
    """The Postgres type that holds a column pyodbc describes with ``python_type``.

    Integers of at most 10 digits become ``integer``, wider ones ``bigint``; a type
    pyodbc does not name (drivers may return anything) becomes ``text``.
    """
    if python_type is int and size and size <= 10:
        return "integer"
    return TYPE_MAP.get(python_type, "text")


def _json_value(value: Any) -> Any:
    """A value as JSON can hold it, losing nothing Postgres needs to read it back."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    return _json_default(value)


def _json_default(value: Any) -> Any:
    """JSON for what the json encoder cannot write itself (it calls this only for those)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    return str(value)  # Decimal, UUID and anything a driver invents


def _cursor_type(value: Any) -> str:
    for name, cls in (("datetime", dt.datetime), ("date", dt.date), ("decimal", Decimal)):
        if isinstance(value, cls):
            return name
    if isinstance(value, bool | int):
        return "int"
    return "float" if isinstance(value, float) else "str"


def _quote(value: Any) -> str:
    text = str(value)
    return "{" + text.replace("}", "}}") + "}" if any(c in text for c in ";{}= ") else text


class OdbcSource(SourcePlugin):
    """Rows of a SQL query run through an ODBC driver, incrementally by a cursor column."""

    type = "odbc"

    # -- settings ---------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every problem with the connection, query, cursor and timeout settings."""
        problems = []
        o, s = self.options, self.secrets
        if not (s.get("connection_string") or o.get("connection_string") or o.get("dsn")):
            if not o.get("driver"):
                problems.append(
                    "set options.dsn, options.driver (with server, database...) or a"
                    " connection_string secret"
                )
        if _PASSWORD_IN.search(str(o.get("connection_string", ""))):
            problems.append(
                "options.connection_string holds a password: declare it under secrets"
                " (secrets are never shown or logged; options are)"
            )
        query = o.get("query")
        if not isinstance(query, str) or not query.strip():
            problems.append("options.query is required (SQL; each ? is bound to the cursor)")
        elif "?" in query:
            if not o.get("cursor_column"):
                problems.append("options.cursor_column is required when the query has a ?")
            if "initial_cursor" not in o and not o.get("full_query"):
                problems.append(
                    "options.initial_cursor (bound before the first load) or options.full_query"
                    " is required when the query has a ?"
                )
        col = o.get("cursor_column")
        if col and col not in self.spec.column_names:
            problems.append(f"options.cursor_column {col!r} is not a declared column")
        problems += count_problems(o, "chunk_size", 5000, 1)
        problems += duration_problems(o, "login_timeout", "query_timeout")
        try:
            ZoneInfo(str(o.get("timezone", "UTC")))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"options.timezone {o.get('timezone')!r} is not a time zone name")
        return problems

    @property
    def chunk_size(self) -> int:
        """Rows per payload."""
        return int(self.options.get("chunk_size", 5000))

    def connection_string(self) -> str:
        """The ODBC connection string (holds the password: never log it)."""
        text = self.secrets.get("connection_string") or self.options.get("connection_string")
        if text:
            parts = [str(text).rstrip(";")]
        else:
            parts = [f"DSN={_quote(self.options['dsn'])}"] if self.options.get("dsn") else []
            for option, keyword in _CONNECT_PARTS:
                if option in self.options:
                    parts.append(f"{keyword}={_quote(self.options[option])}")
        if self.secrets.get("password") is not None:
            parts.append(f"PWD={_quote(self.secrets['password'])}")
        return ";".join(parts) + ";"

    def _redact(self, text: str) -> str:
        for value in self.secrets.values():
            if value:
                text = text.replace(str(value), "***")
        return text

    def _describe_error(self, exc: Exception) -> str:
        args = getattr(exc, "args", ())
        message = str(args[1] if len(args) > 1 else exc).replace("\n", " ").strip()
        return self._redact(message)

    # -- fetch ------------------------------------------------------------------------------

    def connect(self):
        """An open pyodbc connection with the login and query timeouts applied."""
        import pyodbc

        login = int(seconds(self.options.get("login_timeout", "15s")))
        try:
            conn = pyodbc.connect(self.connection_string(), timeout=login, autocommit=True)
        except pyodbc.Error as exc:
            raise FetchError(
                f"source {self.spec.name!r}: cannot connect to the ODBC database:"
                f" {self._describe_error(exc)}"
            ) from None
        self._prepare_session(conn)
        return conn

    def _prepare_session(self, conn) -> None:
        """Set the session's time zone and query timeout.

        Drivers differ: psqlODBC and MariaDB ignore or refuse ODBC's own query timeout,
        so their session settings are used. The time zone makes the server hand out
        ``timestamptz`` values in ``options.timezone``, the zone ingest reads them in.
        """
        import pyodbc

        limit = seconds(self.options.get("query_timeout", "5m"))
        zone = str(self.options.get("timezone", "UTC"))
        dbms = str(conn.getinfo(pyodbc.SQL_DBMS_NAME) or "").lower()
        if "postgres" in dbms:
            conn.execute("SELECT set_config('TimeZone', ?, false)", zone)
            conn.execute(f"SET statement_timeout = {int(limit * 1000)}")
        elif "maria" in dbms or "mysql" in dbms:
            try:
                conn.execute("SET time_zone = ?", "+00:00" if zone == "UTC" else zone)
            except pyodbc.Error:
                pass  # named zones need the server's time zone tables; TIMESTAMPs stay local
            if limit:
                conn.execute(f"SET SESSION max_statement_time = {float(limit)}")
        elif limit:
            try:
                conn.timeout = max(1, int(limit))
            except pyodbc.Error:
                pass  # the driver has no query timeout; the rq job timeout still applies

    def bind_value(self, cursor: Any) -> Any:
        """The value bound to each ``?`` for a stored cursor (or the initial cursor).

        A textual initial cursor is bound as the declared type of the cursor column
        (timestamp, date or integer), so every driver compares it as such.
        """
        if cursor is None:
            return self._initial_cursor()
        if isinstance(cursor, dict) and "value" in cursor:
            convert = _CURSOR_TYPES.get(cursor.get("type", "str"), str)
            return None if cursor["value"] is None else convert(cursor["value"])
        return cursor

    def _initial_cursor(self) -> Any:
        value = self.options.get("initial_cursor")
        col = self.options.get("cursor_column")
        if not isinstance(value, str) or col not in self.spec.column_names:
            return value
        ctype = self.spec.column_type(col)
        try:
            if ctype in ("timestamptz", "timestamp"):
                parsed = dt.datetime.fromisoformat(value)
                if parsed.tzinfo is not None:  # the session hands out local times of `timezone`
                    zone = ZoneInfo(str(self.options.get("timezone", "UTC")))
                    parsed = parsed.astimezone(zone).replace(tzinfo=None)
                return parsed
            if ctype == "date":
                return dt.date.fromisoformat(value)
            if ctype in ("integer", "bigint", "smallint"):
                return int(value)
        except ValueError:
            raise PluginConfigError(
                f"source {self.spec.name!r}: options.initial_cursor {value!r} is not a {ctype}"
            ) from None
        return value

    def fetch(self, cursor: Any) -> Iterator[Payload]:
        """Run the query bound to ``cursor`` and yield one JSON payload per chunk of rows."""
        import pyodbc

        query = self.options["query"]
        if cursor is None and self.options.get("full_query"):
            query = self.options["full_query"]
        params = [self.bind_value(cursor)] * query.count("?")
        conn = self.connect()
        try:
            cur = conn.cursor()
            step = "run the query"
            try:
                cur.execute(query, *params)
                names = [d[0] for d in cur.description or []]
                if not names:
                    raise PluginConfigError(
                        f"source {self.spec.name!r}: the query returns no result set"
                    )
                types = [postgres_type(d[1], d[3]) for d in cur.description]
                key = self._cursor_index(names)
                best = None
                chunk = 0
                step = "fetch rows"
                while rows := cur.fetchmany(self.chunk_size):
                    chunk += 1
                    if key is not None:
                        values = [r[key] for r in rows if r[key] is not None]
                        if values:
                            top = max(values)
                            best = top if best is None or top > best else best
                    body = {
                        "columns": names,
                        "types": types,
                        "rows": [tuple(r) for r in rows],
                    }
                    meta = {"chunk": chunk, "rows": len(rows)}
                    if best is not None:
                        meta["cursor"] = {
                            "column": names[key],
                            "value": _json_value(best),
                            "type": _cursor_type(best),
                        }
                    yield Payload(
                        content=json.dumps(
                            body, separators=(",", ":"), default=_json_default
                        ).encode(),
                        name=f"{self.spec.name} rows chunk {chunk}",
                        media_type="application/json",
                        meta=meta,
                    )
            except pyodbc.ProgrammingError as exc:
                raise PluginConfigError(
                    f"source {self.spec.name!r}: the query failed: {self._describe_error(exc)}"
                ) from None
            except pyodbc.Error as exc:
                raise FetchError(
                    f"source {self.spec.name!r}: could not {step}: {self._describe_error(exc)}"
                ) from None
        finally:
            try:
                conn.close()
            except pyodbc.Error:
                pass  # the connection is already gone (server killed); nothing to release

    def _cursor_index(self, names: list[str]) -> int | None:
        col = self.options.get("cursor_column")
        if not col:
            return None
        lower = [n.lower() for n in names]
        if col.lower() not in lower:
            raise PluginConfigError(
                f"source {self.spec.name!r}: the query returns no column {col!r}"
                f" (options.cursor_column); it returns {', '.join(names)}"
            )
        return lower.index(col.lower())

    def describe(self) -> list[dict[str, str]]:
        """The query's columns as ``{name, type}`` declarations (Postgres types)."""
        query = self.options["query"]
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(query, *[self.bind_value(None)] * query.count("?"))
            return [
                {"name": d[0].lower(), "type": postgres_type(d[1], d[3])} for d in cur.description
            ]
        finally:
            conn.close()

    # -- ingest -----------------------------------------------------------------------------

    def ingest(self, payload: Payload) -> pd.DataFrame:
        """The chunk's rows with the declared columns; naive timestamps read in ``timezone``."""
        try:
            body = json.loads(payload.content)
            frame = pd.DataFrame(body["rows"], columns=body["columns"], dtype=object)
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordError(f"{payload.name}: not an ODBC rows payload: {exc}") from None
        frame = select_columns(frame, self.spec, payload.name)
        zone = str(self.options.get("timezone", "UTC"))
        for col in self.spec.columns:
            if col.type == "timestamptz":
                frame[col.name] = _with_zone(frame[col.name], zone)
        return frame

    def next_cursor(self, cursor: Any, payloads: list[Payload]) -> Any:
        """The largest cursor-column value loaded, or ``cursor`` when nothing new came."""
        for payload in reversed(payloads):
            if payload.meta.get("cursor"):
                return payload.meta["cursor"]
        return cursor


_AWARE = r"T.*(?:Z|[+-]\d\d:?\d\d)$"


def _with_zone(values: pd.Series, zone: str) -> pd.Series:
    """ISO timestamps without an offset, given the offset of ``zone`` at that instant.

    A time that occurs twice (the hour clocks go back) is read as the first one.
    """
    naive = values.notna() & ~values.astype(str).str.contains(_AWARE, regex=True)
    if not naive.any():
        return values
    text = values[naive].astype(str)
    text = text.where(text.str.contains("T", regex=False), text + "T00:00:00")
    if zone == "UTC":
        suffix: Any = "+00:00"
    else:
        try:
            parsed = pd.to_datetime(text, format="ISO8601")
        except (ValueError, TypeError):
            return values  # not timestamps after all: Postgres will say what is wrong
        localized = parsed.dt.tz_localize(
            zone, ambiguous=np.ones(len(parsed), dtype=bool), nonexistent="shift_forward"
        )
        utc = localized.dt.tz_convert("UTC").dt.tz_localize(None)
        minutes = ((localized.dt.tz_localize(None) - utc) / pd.Timedelta(minutes=1)).astype(int)
        sign = pd.Series(np.where(minutes < 0, "-", "+"), index=minutes.index)
        hours = (minutes.abs() // 60).astype(str).str.zfill(2)
        suffix = sign + hours + ":" + (minutes.abs() % 60).astype(str).str.zfill(2)
    out = values.astype(object).copy()
    out[naive] = text + suffix
    return out


def installed_driver(word: str) -> str | None:
    """The installed unixODBC driver whose name holds ``word`` (Unicode preferred), or None."""
    import pyodbc

    names = sorted(
        (d for d in pyodbc.drivers() if word.lower() in d.lower()),
        key=lambda d: "unicode" not in d.lower(),
    )
    return names[0] if names else None


def postgres_connection_string(url: str, driver: str) -> str:
    """A psqlODBC connection string for the Postgres database at ``url``.

    An embedded Postgres listens on a Unix socket (``?host=/dir``); psqlODBC takes the
    socket folder as its server name.
    """
    parsed = urlparse(url)
    host = parse_qs(parsed.query).get("host", [parsed.hostname or "127.0.0.1"])[0]
    parts = [
        f"Driver={{{driver}}}",
        f"Server={host}",
        f"Port={parsed.port or 5432}",
        f"Database={parsed.path.lstrip('/')}",
        f"UID={parsed.username or 'postgres'}",
    ]
    if parsed.password:
        parts.append(f"PWD={parsed.password}")
    return ";".join(parts) + ";"

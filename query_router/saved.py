"""Saved queries: analysts' parameterised SQL with typed inputs and outputs."""

from __future__ import annotations

import json
import re
from typing import Any

from cxd.catalog import parse_duration
from cxd.errors import NotFound
from cxd.stores import Stores
from query_router.bind_params import check_declarations
from query_router.exceptions import QueryError
from query_router.router import plan_query

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_saved_query(stores: Stores, body: Any) -> dict[str, Any]:
    """Check a saved-query body (name, sql, params, outputs, refresh); return it normalised."""
    if not isinstance(body, dict):
        raise QueryError("a saved query must be a JSON object with name and sql")
    problems = []
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("name: lower-case letters, digits and _ starting with a letter")
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        problems.append("sql: required")
    outputs = body.get("outputs") or []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and o.get("name") for o in outputs
    ):
        problems.append("outputs: a list of {name, type}")
        outputs = []
    refresh = body.get("refresh")
    if refresh is not None:
        try:
            parse_duration(refresh)
        except ValueError as exc:
            problems.append(f"refresh: {exc}")
    if problems:
        raise QueryError("; ".join(problems), details={"problems": problems})
    params = check_declarations(body.get("params") or [])
    plan_query(stores, sql, params)  # raises QueryError naming line and column
    return {"name": name, "sql": sql, "params": params, "outputs": outputs, "refresh": refresh}


def save_query(stores: Stores, body: Any) -> dict[str, Any]:
    """Check and store (insert or replace) a saved query."""
    q = check_saved_query(stores, body)
    stores.db.execute(
        "INSERT INTO cxd.saved_queries (name, sql, params, outputs, refresh) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET sql = EXCLUDED.sql, params = EXCLUDED.params,"
        " outputs = EXCLUDED.outputs, refresh = EXCLUDED.refresh, updated_at = now()",
        (q["name"], q["sql"], json.dumps(q["params"]), json.dumps(q["outputs"]), q["refresh"]),
    )
    return q


def get_query(stores: Stores, name: str) -> dict[str, Any]:
    """A saved query by name."""
    row = stores.db.fetchone(
        "SELECT name, sql, params, outputs, refresh FROM cxd.saved_queries WHERE name = %s", (name,)
    )
    if row is None:
        raise NotFound(f"no saved query named {name!r}")
    return row


def list_queries(stores: Stores) -> list[dict[str, Any]]:
    """Every saved query."""
    return stores.db.fetchall(
        "SELECT name, sql, params, outputs, refresh FROM cxd.saved_queries ORDER BY name"
    )

"""Saved queries: analysts' parameterised SQL with typed inputs and outputs.

A saved query is checked when saved (planned, then run once with its defaults, and its
result columns compared with the declared outputs) and its parameters on every call.
Definitions live in ``cxd.saved_queries`` and are mirrored in Redis so that
:func:`run_saved` answers a cache hit without any Postgres query.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cxd.catalog import parse_duration
from cxd.errors import NotFound
from cxd.stores import Stores
from query_router import cache
from query_router.bind_params import bind_values, check_declarations
from query_router.exceptions import QueryError
from query_router.router import explain, plan_query, run_query

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# the clock moves without any data changing: answers that read it are never cached
CLOCK = re.compile(
    r"\b(now|current_timestamp|current_date|current_time|localtimestamp|localtime"
    r"|clock_timestamp|statement_timestamp|transaction_timestamp|timeofday)\b",
    re.IGNORECASE,
)
MIRROR = "cxd:queries"  # Redis hash: name -> definition (JSON)
_FAMILIES = [
    {"integer", "bigint", "smallint"},
    {"double precision", "real", "float", "numeric"},
    {"text", "varchar", "character varying"},
    {"timestamptz", "timestamp with time zone"},
    {"timestamp", "timestamp without time zone"},
    {"jsonb", "json"},
]


def _same_family(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or any(a in f and b in f for f in _FAMILIES)


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
    defaults = {p["name"]: p.get("default") for p in params}
    # run once with the defaults: types of parameters and outputs are checked by Postgres
    try:
        result = run_query(stores, sql, params, defaults)
    except QueryError as exc:
        if (exc.details or {}).get("sqlstate") != "42P01":
            raise
        # a dataset declared but never loaded has no raw table yet: check what can be
        plan = plan_query(stores, sql, params, defaults)
        return {
            "name": name,
            "sql": sql,
            "params": params,
            "outputs": outputs,
            "refresh": refresh,
            "datasets": sorted(plan.datasets),
        }
    got = {c["name"]: c["type"] for c in result["columns"]}
    for out in outputs:
        if out["name"] not in got:
            problems.append(f"outputs: the query returns no column {out['name']!r}")
        elif out.get("type") and not _same_family(str(out["type"]), got[out["name"]]):
            problems.append(
                f"outputs: {out['name']!r} is {got[out['name']]}, declared {out['type']}"
            )
    if problems:
        raise QueryError("; ".join(problems), details={"problems": problems})
    datasets = sorted(result["freshness"]["datasets"])
    return {
        "name": name,
        "sql": sql,
        "params": params,
        "outputs": outputs,
        "refresh": refresh,
        "datasets": datasets,
    }


def _mirror(stores: Stores, q: dict[str, Any]) -> None:
    stores.redis.hset(MIRROR, q["name"], json.dumps(q, default=str))


def save_query(stores: Stores, body: Any) -> dict[str, Any]:
    """Check and store (insert or replace) a saved query."""
    q = check_saved_query(stores, body)
    stores.db.execute(
        "INSERT INTO cxd.saved_queries (name, sql, params, outputs, refresh) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET sql = EXCLUDED.sql, params = EXCLUDED.params,"
        " outputs = EXCLUDED.outputs, refresh = EXCLUDED.refresh, updated_at = now()",
        (q["name"], q["sql"], json.dumps(q["params"]), json.dumps(q["outputs"]), q["refresh"]),
    )
    cache.forget(stores.redis, q["name"])
    _mirror(stores, q)
    return {k: v for k, v in q.items() if k != "datasets"}


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


def delete_query(stores: Stores, name: str) -> None:
    """Forget a saved query and its cached results."""
    with stores.db.cursor() as cur:
        cur.execute("DELETE FROM cxd.saved_queries WHERE name = %s", (name,))
        if cur.rowcount == 0:
            raise NotFound(f"no saved query named {name!r}")
    stores.redis.hdel(MIRROR, name)
    cache.forget(stores.redis, name)


def definition(stores: Stores, name: str) -> dict[str, Any]:
    """A saved query with the datasets it reads, from Redis (Postgres on a cold mirror)."""
    raw = stores.redis.hget(MIRROR, name)
    if raw is not None:
        return json.loads(raw)
    q = get_query(stores, name)
    plan = plan_query(
        stores, q["sql"], q["params"], {p["name"]: p.get("default") for p in q["params"]}
    )
    q = {**q, "datasets": sorted(plan.datasets)}
    _mirror(stores, q)
    return q


def _values(q: dict[str, Any], values: dict[str, Any] | None) -> dict[str, Any]:
    """The call's values coerced to the declared types (400 naming a wrong one)."""
    given = {k: v for k, v in (values or {}).items() if v is not None}
    return bind_values(q["params"], given, {p["name"] for p in q["params"]})


def run_saved(
    stores: Stores, name: str, values: dict[str, Any] | None = None, *, fresh: bool = False
) -> dict[str, Any]:
    """Answer saved query ``name`` with ``values``: from the cache if no data changed since
    (never for SQL that reads the clock, such as ``now() - interval '5 seconds'``).

    ``fresh`` skips the cache lookup (the answer is still cached): a refresh at the
    query's interval must see loads that announced nothing.
    """
    q = definition(stores, name)
    bound = _values(q, values)
    if CLOCK.search(q["sql"]):  # its answer changes with time alone: never cached
        result = run_query(stores, q["sql"], q["params"], bound)
        result["freshness"]["cached"] = False
        return result
    state = cache.data_state(stores.redis, q["datasets"])
    key = cache.cache_key(name, q["sql"], bound, state)
    hit = None if fresh else cache.get(stores.redis, key)
    if hit is not None:
        hit["freshness"]["cached"] = True
        return hit
    result = run_query(stores, q["sql"], q["params"], bound)
    result["freshness"]["cached"] = False
    cache.put(stores.redis, key, result)
    return result


def plan_saved(stores: Stores, name: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The router's decision for saved query ``name`` with ``values``."""
    q = definition(stores, name)
    return explain(stores, q["sql"], q["params"], _values(q, values))

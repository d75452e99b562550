"""The router: an ordered tuple of small passes from SQL text to an executable plan,
then execution in the order invariant 1 needs (Redis first, then one Postgres snapshot).
"""

from __future__ import annotations

import json
import threading
import time
from functools import partial
from typing import Any

from cxd.catalog import SourceSpec, list_sources
from cxd.stores import Stores
from query_router.bind_params import bind_params, bind_values, check_declarations, used_params
from query_router.choose_layer import choose_layer
from query_router.exceptions import QueryError
from query_router.execute import ROW_CAP, execute
from query_router.extract_time_bounds import extract_time_bounds
from query_router.plan import Plan
from query_router.read_speed import read_speed, seen_watermark
from query_router.resolve_datasets import resolve_datasets
from query_router.rewrite_merge import rewrite_merge
from query_router.speed_eval import evaluate
from query_router.stale import apply_policy
from query_router.validate import validate
from speed.stream import parse_id

CATALOG_TTL = 1.0  # seconds a process trusts its copy of the declared datasets
_catalog: dict[str, Any] = {"at": 0.0, "url": None, "specs": {}, "extra": {}}
_catalog_lock = threading.Lock()


def catalog(stores: Stores, *, refresh: bool = False) -> tuple[dict[str, SourceSpec], dict]:
    """Declared datasets (and engine columns analysts may read), cached for a second."""
    with _catalog_lock:
        fresh = time.monotonic() - _catalog["at"] < CATALOG_TTL
        if refresh or not fresh or _catalog["url"] != stores.settings.database_url:
            specs = {spec.name: spec for spec in list_sources(stores.db)}
            extra: dict[str, list[str]] = {}
            for row in stores.db.fetchall(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'raw' AND column_name IN ('_valid_from', '_valid_to')"
                " ORDER BY table_name, column_name DESC"
            ):
                spec = specs.get(row["table_name"])
                if spec is not None and spec.kind == "point_in_time":
                    extra.setdefault(row["table_name"], []).append(row["column_name"])
            _catalog.update(
                at=time.monotonic(), url=stores.settings.database_url, specs=specs, extra=extra
            )
        return _catalog["specs"], _catalog["extra"]


def forget_catalog() -> None:
    """Make the next query re-read the declared datasets (call after changing a source)."""
    with _catalog_lock:
        _catalog["at"] = 0.0


def rules(specs: dict[str, SourceSpec], stores: Stores) -> tuple:
    """The passes, in order (``read_speed`` is the one step that reads a store: Redis)."""
    return (
        validate,
        partial(resolve_datasets, catalog=specs),
        extract_time_bounds,
        partial(read_speed, client=stores.redis, scope=stores.settings.database_url),
        choose_layer,
        bind_params,
        rewrite_merge,
    )


# The last two passes' output depends only on the query's shape: its text, declarations,
# the layers chosen and the datasets' declarations. Dashboards repeat a few shapes, so
# this process keeps the rewritten tree and its SQL text per shape (the trees are shared,
# never changed after planning).
_rewritten: dict[tuple, tuple] = {}
REWRITTEN_ENTRIES = 256


def _shape(plan: Plan) -> tuple:
    return (
        plan.sql,
        json.dumps(plan.params, sort_keys=True, default=str),
        tuple(sorted(plan.layers.items())),
        tuple(sorted((k, tuple(v)) for k, v in plan.extra_columns.items() if k in plan.datasets)),
        tuple(repr(plan.datasets[name]) for name in sorted(plan.datasets)),
    )


def _reuse_rewrite(plan: Plan) -> bool:
    """Finish ``plan`` from a rewrite of the same shape, if this process has one."""
    found = _rewritten.get(_shape(plan))
    if found is None:
        return False
    plan.expression, plan.logical, positional, used, plan.sql_text = found
    plan.positional = list(positional)
    plan.bound = bind_values(plan.params, plan.values, used)
    return True


def _keep_rewrite(plan: Plan, shape: tuple, used: set[str]) -> None:
    if len(_rewritten) >= REWRITTEN_ENTRIES:
        _rewritten.clear()
    _rewritten[shape] = (plan.expression, plan.logical, tuple(plan.positional), used, plan.text())


def plan_query(
    stores: Stores,
    sql: str,
    params: list[dict[str, Any]] | None = None,
    values: dict[str, Any] | None = None,
) -> Plan:
    """Run every pass over ``sql`` with parameter ``values`` and return the plan."""
    declared = check_declarations(params or [])
    for attempt in (0, 1):
        specs, extra = catalog(stores, refresh=attempt == 1)
        plan = Plan(sql=sql, params=declared, values=dict(values or {}), extra_columns=extra)
        try:
            shape, used = None, set()
            for rule in rules(specs, stores):
                if rule is bind_params:
                    if _reuse_rewrite(plan):
                        return plan
                    shape, used = _shape(plan), used_params(plan)
                plan = rule(plan)
            if shape is not None:
                _keep_rewrite(plan, shape, used)
            return plan
        except QueryError as exc:
            if attempt or (exc.details or {}).get("construct") != "table":
                raise  # otherwise: maybe a dataset declared since the catalog was read
    raise AssertionError("unreachable")


def freshness(stores: Stores, plan: Plan, marks: dict[str, dict] | None) -> dict[str, Any]:
    """How fresh an answer is: batch watermark, speed high-water mark, plan (invariant 6)."""
    datasets = {}
    for name in plan.datasets:
        view = plan.speed.get(name)
        mark = (marks or {}).get(name)
        datasets[name] = {
            "layer": plan.layers.get(name, "batch"),
            "batch_watermark": mark["stream_id"]
            if mark
            else seen_watermark(stores.settings.database_url, name),
            "refreshed_at": mark["refreshed_at"] if mark else None,
            "speed_high_water": view.high_water if view else None,
            "stale": False,
        }
    highs = [d["speed_high_water"] for d in datasets.values() if d["speed_high_water"]]
    first = next(iter(datasets.values()), {})
    return {
        "plan": plan.layer,
        "batch_watermark": first.get("batch_watermark"),
        "speed_high_water": max(highs, key=parse_id) if highs else None,
        "stale": False,
        "datasets": datasets,
    }


def execute_plan(stores: Stores, plan: Plan, *, row_cap: int = ROW_CAP) -> dict[str, Any]:
    """Answer a plan: speed-only shapes in Python without Postgres, the rest in Postgres."""
    result = evaluate(plan, plan.logical) if plan.layer == "speed" else None
    if result is not None:
        result["rows"] = result["rows"][:row_cap]
        marks = None
    else:
        result = execute(stores, plan, row_cap=row_cap)
        marks = result.pop("watermarks")
    result["freshness"] = freshness(stores, plan, marks)
    return result


def run_query(
    stores: Stores,
    sql: str,
    params: list[dict[str, Any]] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan and execute ``sql`` with parameter ``values``; return columns, rows, freshness."""
    plan = plan_query(stores, sql, params, values)
    result = execute_plan(stores, plan)
    return apply_policy(
        stores, plan, result, lambda: execute_plan(stores, plan_query(stores, sql, params, values))
    )


def explain(
    stores: Stores,
    sql: str,
    params: list[dict[str, Any]] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The router's decision for ``sql`` without running it: layers, watermarks, estimates."""
    declared = check_declarations(params or [])
    filled = {p["name"]: p.get("default") for p in declared}
    filled.update(values or {})
    plan = plan_query(stores, sql, declared, filled)
    estimates = {
        r["relname"]: max(int(r["n"]), 0)
        for r in stores.db.fetchall(
            "SELECT c.relname, c.reltuples::bigint AS n FROM pg_class c JOIN pg_namespace s"
            " ON s.oid = c.relnamespace WHERE s.nspname = 'raw' AND c.relname = ANY(%s)",
            (list(plan.datasets),),
        )
    }
    marks = {
        r["dataset"]: r["stream_id"]
        for r in stores.db.fetchall(
            "SELECT dataset, stream_id FROM cxd.watermarks WHERE dataset = ANY(%s)",
            (list(plan.datasets),),
        )
    }
    datasets = {}
    for name, layer in plan.layers.items():
        view = plan.speed[name]
        lower, upper = plan.bounds.get(name, (None, None))
        w = parse_id(marks.get(name, "0-0"))
        datasets[name] = {
            "layer": layer,
            "batch_watermark": marks.get(name, "0-0"),
            "speed_high_water": view.high_water,
            "time_range": [
                lower.value.isoformat() if lower else None,
                upper.value.isoformat() if upper else None,
            ],
            "raw_rows_estimate": estimates.get(name, 0) if layer != "speed" else 0,
            "speed_rows": (
                len(view.latest)
                if layer == "speed" and view.latest is not None
                else len(view.entries)  # a live window: every event above the frontier's W
                if layer == "speed"
                else sum(1 for eid, _ in view.entries if parse_id(eid) > w)
                if layer == "merge"
                else 0
            ),
        }
        if view.frontier is not None:
            newest = view.frontier.max_time
            datasets[name]["raw_newest_time"] = newest.isoformat() if newest else None
    return {
        "plan": plan.layer,
        "datasets": datasets,
        "notes": plan.notes,
        "sql": plan.expression.sql(dialect="postgres", pretty=True),
    }

"""The router: an ordered tuple of small passes from SQL text to an executable plan."""

from __future__ import annotations

from functools import partial
from typing import Any

from cxd.catalog import list_sources
from cxd.stores import Stores
from query_router.bind_params import bind_params, bind_values, check_declarations, used_params
from query_router.choose_layer import choose_layer
from query_router.execute import execute
from query_router.plan import Plan
from query_router.resolve_datasets import resolve_datasets
from query_router.rewrite_merge import rewrite_merge
from query_router.validate import validate


def rules(catalog) -> tuple:
    """The passes, in order."""
    return (
        validate,
        partial(resolve_datasets, catalog=catalog),
        choose_layer,
        bind_params,
        rewrite_merge,
    )


def plan_query(stores: Stores, sql: str, params: list[dict[str, Any]] | None = None) -> Plan:
    """Run every pass over ``sql`` and return the plan."""
    catalog = {spec.name: spec for spec in list_sources(stores.db)}
    plan = Plan(sql=sql, params=check_declarations(params or []))
    for rule in rules(catalog):
        plan = rule(plan)
    return plan


def run_query(
    stores: Stores,
    sql: str,
    params: list[dict[str, Any]] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan and execute ``sql`` with parameter ``values``; return columns, rows, freshness."""
    plan = plan_query(stores, sql, params)
    bound = bind_values(plan.params, values or {}, used_params(plan))
    return execute(stores, plan, bound)


def explain(stores: Stores, sql: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The router's decision for ``sql`` without running it."""
    plan = plan_query(stores, sql, params)
    return {
        "plan": plan.layer,
        "datasets": plan.layers,
        "notes": plan.notes,
        "sql": plan.expression.sql(dialect="postgres"),
    }

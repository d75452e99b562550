"""Pass 2: every table the query reads must be a dataset (or a CTE of the query itself)."""

from __future__ import annotations

from sqlglot import exp

from cxd.catalog import SourceSpec
from query_router.plan import Plan
from query_router.validate import reject


def cte_names(tree: exp.Expression) -> set[str]:
    """Names the query defines itself with WITH."""
    return {cte.alias_or_name for cte in tree.find_all(exp.CTE)}


def dataset_tables(tree: exp.Expression, datasets) -> list[exp.Table]:
    """Every table reference of ``tree`` that names one of ``datasets``."""
    ctes = cte_names(tree)
    return [
        t
        for t in tree.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier) and t.name in datasets and t.name not in ctes
    ]


def resolve_datasets(plan: Plan, *, catalog: dict[str, SourceSpec]) -> Plan:
    """Map table references to declared datasets; reject unknown or schema-qualified ones."""
    tree = plan.expression
    ctes = cte_names(tree)
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Func):
            continue  # a set-returning function (already checked against the allow-list)
        if table.args.get("db") or table.args.get("catalog"):
            raise reject(table, f"{table.sql()} names a schema; refer to datasets by name only")
        name = table.name
        if name in ctes:
            continue
        if name not in catalog:
            known = ", ".join(sorted(catalog)) or "none"
            raise reject(table, f"no dataset named {name!r} (known: {known})")
        plan.datasets[name] = catalog[name]
    return plan

"""Pass 2: every table the query reads must be a dataset (or a CTE of the query itself)."""

from __future__ import annotations

from sqlglot import exp

from cxd.catalog import SourceSpec
from query_router.exceptions import QueryError
from query_router.plan import Plan


def resolve_datasets(plan: Plan, *, catalog: dict[str, SourceSpec]) -> Plan:
    """Map table references to declared datasets; reject unknown or schema-qualified ones."""
    tree = plan.expression
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name = table.name
        if table.args.get("db") or table.args.get("catalog"):
            raise QueryError(
                f"{table.sql()} names a schema; refer to datasets by their name only",
                details={"table": table.sql()},
            )
        if name in ctes:
            continue
        if name not in catalog:
            raise QueryError(
                f"no dataset named {name!r} (known: {', '.join(sorted(catalog)) or 'none'})",
                details={"table": name},
            )
        plan.datasets[name] = catalog[name]
    return plan

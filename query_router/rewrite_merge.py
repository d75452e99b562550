"""Pass 5: each dataset reference becomes a subquery over its raw table, and for merged
datasets also over the speed rows above the watermark (bound as one JSON parameter)."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from cxd.catalog import SourceSpec
from query_router.plan import Plan


def speed_param(dataset: str) -> str:
    """Name of the bound parameter carrying a dataset's speed rows."""
    return f"__speed_{dataset}"


def _source_sql(spec: SourceSpec, layer: str) -> str:
    cols = ", ".join(f'"{c}"' for c in spec.column_names)
    batch = f'SELECT {cols} FROM raw."{spec.name}"'
    if layer == "batch":
        return batch
    typed = ", ".join(f'"{c.name}" {c.type}' for c in spec.columns)
    speed = f"SELECT {cols} FROM jsonb_to_recordset(CAST(:{speed_param(spec.name)} AS jsonb)) AS _s({typed})"
    return speed if layer == "speed" else f"{batch} UNION ALL {speed}"


def rewrite_merge(plan: Plan) -> Plan:
    """Replace every dataset table by ``(raw [UNION ALL speed rows]) AS <alias>``."""
    ctes = {cte.alias_or_name for cte in plan.expression.find_all(exp.CTE)}

    def transform(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name in plan.datasets and node.name not in ctes:
            spec = plan.datasets[node.name]
            inner = sqlglot.parse_one(_source_sql(spec, plan.layers[node.name]), read="postgres")
            return exp.Subquery(
                this=inner, alias=exp.TableAlias(this=exp.to_identifier(node.alias_or_name))
            )
        return node

    plan.expression = plan.expression.transform(transform)
    return plan

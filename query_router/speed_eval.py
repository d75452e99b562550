"""Speed-only answers without Postgres: the simple shapes live dashboards ask of the latest
values (``SELECT cols FROM ds WHERE col = :v AND ... ORDER BY col LIMIT n``), evaluated
in Python over the rows read from Redis. Anything else returns None and goes to Postgres.
"""

from __future__ import annotations

import operator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlglot import exp

from cxd.catalog import SourceSpec
from query_router.extract_time_bounds import as_instant
from query_router.plan import Plan

_OPS = {
    exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt, exp.GTE: operator.ge,
    exp.LT: operator.lt, exp.LTE: operator.le,
}  # fmt: skip
_NUMERIC = ("integer", "bigint", "smallint")
_FLOAT = ("double precision", "real")


class _Unsupported(Exception):
    pass


def typed(ctype: str, value: Any) -> Any:
    """A JSON value as Postgres would return it for a column of type ``ctype``."""
    if value is None:
        return None
    if ctype in _NUMERIC:
        return int(value)
    if ctype in _FLOAT:
        return float(value)
    if ctype == "numeric":
        return Decimal(str(value))
    if ctype == "timestamptz":
        return as_instant(value)
    if ctype == "timestamp":
        return datetime.fromisoformat(str(value))
    if ctype == "date":
        return date.fromisoformat(str(value)[:10])
    if ctype == "boolean":
        return bool(value)
    if ctype == "text":
        return str(value)
    raise _Unsupported(ctype)


def _operand(node: exp.Expression, plan: Plan, spec: SourceSpec, ctype: str | None) -> Any:
    if isinstance(node, exp.Cast):
        return _operand(node.this, plan, spec, ctype)
    if isinstance(node, exp.Parameter):
        return plan.bound.get(plan.positional[int(node.this.name) - 1])
    if isinstance(node, exp.Literal) and ctype:
        return typed(ctype, node.this)
    raise _Unsupported(node.sql())


def _column(node: exp.Expression, spec: SourceSpec) -> str:
    if not isinstance(node, exp.Column) or node.name not in spec.column_names:
        raise _Unsupported(node.sql())
    return node.name


def _predicate(cond: exp.Expression, plan: Plan, spec: SourceSpec):
    if isinstance(cond, exp.And):
        left, right = _predicate(cond.this, plan, spec), _predicate(cond.expression, plan, spec)
        return lambda row: left(row) and right(row)
    if type(cond) not in _OPS:
        raise _Unsupported(cond.sql())
    name = _column(cond.this, spec)
    value = _operand(cond.expression, plan, spec, spec.column_type(name))
    op = _OPS[type(cond)]
    return lambda row: row[name] is not None and value is not None and op(row[name], value)


def evaluate(plan: Plan, tree: exp.Expression) -> dict[str, Any] | None:
    """Columns and rows of ``tree`` over the speed rows, or None for unsupported shapes."""
    try:
        return _evaluate(plan, tree)
    except (_Unsupported, KeyError, ValueError, TypeError):
        return None


def _evaluate(plan: Plan, tree: exp.Expression) -> dict[str, Any]:
    if not isinstance(tree, exp.Select) or len(plan.datasets) != 1:
        raise _Unsupported("not a single-dataset SELECT")
    for arg in ("joins", "group", "having", "distinct", "with_", "with", "qualify", "windows"):
        if tree.args.get(arg):
            raise _Unsupported(arg)
    ((name, spec),) = plan.datasets.items()
    rows = [
        {c.name: typed(c.type, rec.get(c.name)) for c in spec.columns}
        for rec in plan.speed[name].latest
    ]
    where = tree.args.get("where")
    if where is not None:
        keep = _predicate(where.this, plan, spec)
        rows = [r for r in rows if keep(r)]
    order = tree.args.get("order")
    if order is not None:
        for key in reversed(order.expressions):
            col = _column(key.this, spec)
            desc = bool(key.args.get("desc"))
            present = [r for r in rows if r[col] is not None]
            missing = [r for r in rows if r[col] is None]
            present.sort(key=lambda r: r[col], reverse=desc)
            rows = missing + present if desc else present + missing  # Postgres: NULLS LAST asc
    limit = tree.args.get("limit")
    if limit is not None:
        rows = rows[: int(limit.expression.name)]
    out: list[tuple[str, str]] = []
    for e in tree.expressions:
        if isinstance(e, exp.Star):
            out += [(c.name, c.name) for c in spec.columns]
        elif isinstance(e, exp.Alias):
            out.append((e.alias, _column(e.this, spec)))
        else:
            out.append((_column(e, spec), _column(e, spec)))
    return {
        "columns": [{"name": alias, "type": spec.column_type(col)} for alias, col in out],
        "rows": [{alias: r[col] for alias, col in out} for r in rows],
        "truncated": False,
    }

"""Pass 3: read the time range each dataset is queried over from its time column's
predicates (``>=``, ``>``, ``<``, ``<=``, ``=``, ``BETWEEN`` with literals or parameters).

Only conjuncts of the WHERE of the SELECT that reads the dataset count, so a bound is
always safe: rows outside it cannot change the answer. A dataset read in several places
gets the union of their ranges; anything not understood leaves that end unbounded.

``now()`` / ``current_timestamp`` minus an interval literal bounds a range from below only,
at the moment the query was planned: Postgres's now() is the later start of its
transaction, so the range it reads starts no earlier than the one recorded here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlglot import exp

from query_router.bind_params import coerce, param_name
from query_router.plan import Bound, Plan
from query_router.resolve_datasets import dataset_tables


def as_instant(value: Any) -> datetime | None:
    """A comparable UTC datetime for a time value (naive values are read as UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def _value(node: exp.Expression, plan: Plan) -> datetime | None:
    if isinstance(node, exp.Cast):
        return _value(node.this, plan)
    if isinstance(node, exp.Literal) and node.is_string:
        return as_instant(node.this)
    if isinstance(node, exp.Placeholder | exp.Parameter):
        try:
            name = param_name(node, plan.params)
        except Exception:
            return None
        declared = next((p for p in plan.params if p["name"] == name), None)
        raw = plan.values.get(name, declared.get("default") if declared else None)
        if declared is None or raw is None:
            return None
        try:
            return as_instant(coerce(name, declared["type"], raw))
        except Exception:
            return None
    return None


def _now_lower(node: exp.Expression, plan: Plan) -> datetime | None:
    from query_router.speed_eval import now_relative

    return now_relative(node, plan.now)


def _sources(select: exp.Select) -> list[exp.Expression]:
    from_ = select.args.get("from_") or select.args.get("from")
    sources = [from_.this] if from_ is not None else []
    return sources + [j.this for j in select.args.get("joins") or []]


def _is_column_of(node: exp.Expression, table: exp.Table, column: str, alone: bool) -> bool:
    if not isinstance(node, exp.Column) or node.name != column:
        return False
    qualifier = node.table
    return qualifier == table.alias_or_name if qualifier else alone


def _conjuncts(where: exp.Expression) -> list[exp.Expression]:
    if isinstance(where, exp.And):
        return _conjuncts(where.this) + _conjuncts(where.expression)
    if isinstance(where, exp.Paren):
        return _conjuncts(where.this)
    return [where]


def _tighten(current: Bound | None, new: Bound, lower: bool) -> Bound:
    if current is None:
        return new
    if new.value == current.value:
        return Bound(new.value, new.inclusive and current.inclusive)
    return new if (new.value > current.value) == lower else current


def occurrence_bounds(
    table: exp.Table, column: str, plan: Plan
) -> tuple[Bound | None, Bound | None]:
    """The range one reference to a dataset reads, from its SELECT's WHERE."""
    select = table.parent.parent if table.parent is not None else None
    if not isinstance(select, exp.Select) or select.args.get("where") is None:
        return None, None
    alone = len(_sources(select)) == 1
    lower: Bound | None = None
    upper: Bound | None = None
    flipped = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}
    for cond in _conjuncts(select.args["where"].this):
        if isinstance(cond, exp.Between) and _is_column_of(cond.this, table, column, alone):
            low = _value(cond.args["low"], plan) or _now_lower(cond.args["low"], plan)
            high = _value(cond.args["high"], plan)
            if low is not None:
                lower = _tighten(lower, Bound(low, True), lower=True)
            if high is not None:
                upper = _tighten(upper, Bound(high, True), lower=False)
            continue
        kind = type(cond)
        if kind not in flipped:
            continue
        left, right = cond.this, cond.expression
        if _is_column_of(right, table, column, alone):
            left, right, kind = right, left, flipped[kind]
        if not _is_column_of(left, table, column, alone):
            continue
        value = _value(right, plan)
        if value is None and kind in (exp.GT, exp.GTE):
            value = _now_lower(right, plan)
        if value is None:
            continue
        if kind in (exp.GT, exp.GTE, exp.EQ):
            lower = _tighten(lower, Bound(value, kind is not exp.GT), lower=True)
        if kind in (exp.LT, exp.LTE, exp.EQ):
            upper = _tighten(upper, Bound(value, kind is not exp.LT), lower=False)
    return lower, upper


EXACT_TYPES = ("text", "integer", "bigint", "smallint")


def occurrence_equalities(table: exp.Table, spec, plan: Plan) -> dict[str, Any]:
    """``column = value`` conjuncts on exact-typed columns of one reference to a dataset."""
    select = table.parent.parent if table.parent is not None else None
    if not isinstance(select, exp.Select) or select.args.get("where") is None:
        return {}
    alone = len(_sources(select)) == 1
    found: dict[str, Any] = {}
    for cond in _conjuncts(select.args["where"].this):
        if not isinstance(cond, exp.EQ):
            continue
        for col, other in ((cond.this, cond.expression), (cond.expression, cond.this)):
            if not isinstance(col, exp.Column) or col.name not in spec.column_names:
                continue
            ctype = spec.column_type(col.name)
            if ctype not in EXACT_TYPES or not _is_column_of(col, table, col.name, alone):
                continue
            value = _exact(other, ctype, plan)
            if value is not None:
                found[col.name] = value
    return found


def _exact(node: exp.Expression, ctype: str, plan: Plan) -> Any:
    from query_router.speed_eval import typed

    if isinstance(node, exp.Cast):
        node = node.this
    try:
        if isinstance(node, exp.Literal):
            return typed(ctype, node.this)
        if isinstance(node, exp.Placeholder | exp.Parameter):
            name = param_name(node, plan.params)
            declared = next((p for p in plan.params if p["name"] == name), None)
            if declared is None:
                return None
            raw = plan.values.get(name, declared.get("default"))
            return None if raw is None else typed(ctype, coerce(name, declared["type"], raw))
    except Exception:
        return None
    return None


def _widen(a: Bound | None, b: Bound | None, lower: bool) -> Bound | None:
    if a is None or b is None:
        return None
    if a.value == b.value:
        return Bound(a.value, a.inclusive or b.inclusive)
    return a if (a.value < b.value) == lower else b


def extract_time_bounds(plan: Plan) -> Plan:
    """Set ``plan.bounds[dataset]`` to the (lower, upper) time range the query reads, and
    ``plan.equalities[dataset]`` to the values each ``column = value`` filter allows."""
    for table in dataset_tables(plan.expression, plan.datasets):
        spec = plan.datasets[table.name]
        eq = {k: {v} for k, v in occurrence_equalities(table, spec, plan).items()}
        if table.name in plan.equalities:  # a column filters only if every reference does
            old = plan.equalities[table.name]
            eq = {k: old[k] | v for k, v in eq.items() if k in old}
        plan.equalities[table.name] = eq
        if not spec.time_column:
            plan.bounds[table.name] = (None, None)
            continue
        found = occurrence_bounds(table, spec.time_column, plan)
        if table.name not in plan.bounds:
            plan.bounds[table.name] = found
        else:
            old = plan.bounds[table.name]
            plan.bounds[table.name] = (
                _widen(old[0], found[0], lower=True),
                _widen(old[1], found[1], lower=False),
            )
    return plan

"""Speed-only answers without Postgres: the simple shapes live dashboards ask of the latest
values (``SELECT cols FROM ds WHERE col = :v AND ... ORDER BY col LIMIT n``), evaluated
in Python over the rows read from Redis. Anything else returns None and goes to Postgres.
"""

from __future__ import annotations

import operator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlglot import exp

from cxd.catalog import SourceSpec
from query_router.extract_time_bounds import as_instant
from query_router.plan import Plan
from query_router.rewrite_merge import unique_columns

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


_UNITS = {"second": "seconds", "minute": "minutes", "hour": "hours", "day": "days"}
_TRUNC = {  # date_trunc unit -> the datetime fields it zeroes (in UTC, as the router runs)
    "second": {"microsecond": 0},
    "minute": {"second": 0, "microsecond": 0},
    "hour": {"minute": 0, "second": 0, "microsecond": 0},
    "day": {"hour": 0, "minute": 0, "second": 0, "microsecond": 0},
}


def interval(node: exp.Interval) -> timedelta:
    """A ``interval '5 seconds'`` / ``interval '5' second`` literal as a timedelta."""
    text = node.this.name if isinstance(node.this, exp.Literal) else None
    if text is None:
        raise _Unsupported(node.sql())
    parts = text.split()
    unit = node.args.get("unit")
    if unit is not None:
        parts.append(unit.name)
    if len(parts) != 2:
        raise _Unsupported(node.sql())
    name = parts[1].lower().rstrip("s")
    if name not in _UNITS:
        raise _Unsupported(node.sql())
    return timedelta(**{_UNITS[name]: float(parts[0])})


def now_relative(node: exp.Expression, now: datetime) -> datetime | None:
    """``now()`` / ``current_timestamp``, plus or minus interval literals, at ``now``."""
    if isinstance(node, exp.Paren):
        return now_relative(node.this, now)
    if isinstance(node, exp.CurrentTimestamp) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "now" and not node.expressions
    ):
        return now
    if isinstance(node, exp.Add | exp.Sub) and isinstance(node.expression, exp.Interval):
        base = now_relative(node.this, now)
        try:
            delta = interval(node.expression)
        except (_Unsupported, ValueError):
            return None
        if base is None:
            return None
        return base + delta if isinstance(node, exp.Add) else base - delta
    return None


def _operand(node: exp.Expression, plan: Plan, spec: SourceSpec, ctype: str | None) -> Any:
    if isinstance(node, exp.Cast):
        return _operand(node.this, plan, spec, ctype)
    if isinstance(node, exp.Parameter):
        return plan.bound.get(plan.positional[int(node.this.name) - 1])
    if isinstance(node, exp.Literal) and ctype:
        return typed(ctype, node.this)
    moment = now_relative(node, plan.now)
    if moment is not None and ctype == "timestamptz":
        return moment
    raise _Unsupported(node.sql())


def _column(node: exp.Expression, spec: SourceSpec) -> str:
    if not isinstance(node, exp.Column) or node.name not in spec.column_names:
        raise _Unsupported(node.sql())
    return node.name


def _predicate(cond: exp.Expression, plan: Plan, spec: SourceSpec):
    if isinstance(cond, exp.Paren):
        return _predicate(cond.this, plan, spec)
    if isinstance(cond, exp.And):
        left, right = _predicate(cond.this, plan, spec), _predicate(cond.expression, plan, spec)
        return lambda row: left(row) and right(row)
    if isinstance(cond, exp.Between):
        col, low, high = cond.this.copy(), cond.args["low"].copy(), cond.args["high"].copy()
        low = _predicate(exp.GTE(this=col, expression=low), plan, spec)
        high = _predicate(exp.LTE(this=col.copy(), expression=high), plan, spec)
        return lambda row: low(row) and high(row)
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


def _rows(plan: Plan, name: str, spec: SourceSpec) -> list[dict[str, Any]]:
    """The dataset's speed rows, typed: latest values, or the events of a live window
    (those the query's filters cannot let through are dropped before typing)."""
    view = plan.speed[name]
    if view.latest is not None:
        records = view.latest
    else:
        keep = in_range(plan, name)
        records = [
            rec
            for (_, rec), t in zip(view.entries, view.times, strict=True)
            if keep is None or keep(t, rec)
        ]
    return [{c.name: typed(c.type, rec.get(c.name)) for c in spec.columns} for rec in records]


def in_range(plan: Plan, name: str):
    """A test keeping only speed rows the query's filters can let through, or None.

    Filters are the time range and ``column = value`` conjuncts read on every reference to
    the dataset, and apply only to columns a speed row cannot use to replace a raw row
    that passes them (no declared key, or a key that includes the column).
    """
    spec = plan.datasets[name]
    unique = unique_columns(spec)
    lower, upper = plan.bounds.get(name, (None, None))
    if unique and spec.time_column not in unique:
        lower = upper = None
    equal = {c: v for c, v in plan.equalities.get(name, {}).items() if not unique or c in unique}
    if lower is None and upper is None and not equal:
        return None
    types = {c: spec.column_type(c) for c in equal}

    def keep(t, rec) -> bool:
        for column, allowed in equal.items():
            try:
                if typed(types[column], rec.get(column)) not in allowed:
                    return False
            except (TypeError, ValueError):
                return True  # let Postgres decide
        if t is None:
            return True
        if lower is not None and (t < lower.value or (t == lower.value and not lower.inclusive)):
            return False
        return not (
            upper is not None and (t > upper.value or (t == upper.value and not upper.inclusive))
        )

    return keep


def _sort(rows: list[dict], order: exp.Order | None, key_of) -> list[dict]:
    if order is None:
        return rows
    for key in reversed(order.expressions):
        col = key_of(key.this)
        desc = bool(key.args.get("desc"))
        present = [r for r in rows if r[col] is not None]
        missing = [r for r in rows if r[col] is None]
        present.sort(key=lambda r: r[col], reverse=desc)
        rows = missing + present if desc else present + missing  # Postgres: NULLS LAST asc
    return rows


def _evaluate(plan: Plan, tree: exp.Expression) -> dict[str, Any]:
    if not isinstance(tree, exp.Select) or len(plan.datasets) != 1:
        raise _Unsupported("not a single-dataset SELECT")
    for arg in ("joins", "having", "distinct", "with_", "with", "qualify", "windows", "offset"):
        if tree.args.get(arg):
            raise _Unsupported(arg)
    ((name, spec),) = plan.datasets.items()
    rows = _rows(plan, name, spec)
    where = tree.args.get("where")
    if where is not None:
        keep = _predicate(where.this, plan, spec)
        rows = [r for r in rows if keep(r)]
    if tree.args.get("group") or any(e.find(exp.AggFunc) for e in tree.expressions):
        return _grouped(tree, rows, spec)
    rows = _sort(rows, tree.args.get("order"), lambda node: _column(node, spec))
    rows = _limit(tree, rows)
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


def _limit(tree: exp.Select, rows: list) -> list:
    limit = tree.args.get("limit")
    return rows if limit is None else rows[: int(limit.expression.name)]


_FLOATS = ("double precision", "real")


def _output(node: exp.Expression, spec: SourceSpec):
    """(name, type, kind, read) of one grouped output: a key, or an aggregate of a column."""
    alias = node.alias if isinstance(node, exp.Alias) else None
    node = node.this if isinstance(node, exp.Alias) else node
    if isinstance(node, exp.Column):
        col = _column(node, spec)
        return alias or col, spec.column_type(col), "key", lambda r: r[col]
    if isinstance(node, exp.TimestampTrunc):
        col, unit = _column(node.this, spec), node.args["unit"].name.lower()
        if spec.column_type(col) != "timestamptz" or unit not in _TRUNC:
            raise _Unsupported(node.sql())
        fields = _TRUNC[unit]
        return (
            alias or "date_trunc",
            "timestamptz",
            "key",
            lambda r: None if r[col] is None else r[col].astimezone(UTC).replace(**fields),
        )
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
        return alias or "count", "bigint", "count*", None
    if isinstance(node, exp.Count | exp.Sum | exp.Avg | exp.Min | exp.Max) and not node.args.get(
        "distinct"
    ):
        col = _column(node.this, spec)
        ctype = spec.column_type(col)
        kind = type(node).__name__.lower()
        if kind in ("sum", "avg") and ctype not in _FLOATS:
            raise _Unsupported(f"{kind} of {ctype}")  # numeric results: leave them to Postgres
        rtype = "bigint" if kind == "count" else "double precision" if kind == "avg" else ctype
        return alias or kind, rtype, kind, lambda r: r[col]
    raise _Unsupported(node.sql())


def _aggregate(kind: str, read, group: list[dict]) -> Any:
    if kind == "count*":
        return len(group)
    values = [v for v in map(read, group) if v is not None]
    if kind == "count":
        return len(values)
    if not values:
        return None
    if kind == "sum":
        return sum(values, 0.0)
    if kind == "avg":
        return sum(values, 0.0) / len(values)
    return min(values) if kind == "min" else max(values)


def _grouped(tree: exp.Select, rows: list[dict], spec: SourceSpec) -> dict[str, Any]:
    outputs = [_output(e, spec) for e in tree.expressions]
    keys: list[int] = []
    for g in tree.args["group"].expressions if tree.args.get("group") else []:
        if isinstance(g, exp.Literal) and not g.is_string:
            index = int(g.name) - 1
        else:
            matches = [
                i
                for i, e in enumerate(tree.expressions)
                if (e.this if isinstance(e, exp.Alias) else e) == g
                or (isinstance(e, exp.Alias) and isinstance(g, exp.Column) and e.alias == g.name)
            ]
            if not matches:
                raise _Unsupported(g.sql())
            index = matches[0]
        if not 0 <= index < len(outputs) or outputs[index][2] != "key":
            raise _Unsupported(g.sql())
        keys.append(index)
    if any(o[2] == "key" and i not in keys for i, o in enumerate(outputs)):
        raise _Unsupported("an output neither grouped nor aggregated")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(outputs[i][3](r) for i in keys), []).append(r)
    if not keys and not groups:
        groups[()] = []  # an aggregate over no rows is one row
    result = []
    for key, members in groups.items():
        values = dict(zip(keys, key, strict=True))
        result.append(
            {
                name: values[i] if kind == "key" else _aggregate(kind, read, members)
                for i, (name, _, kind, read) in enumerate(outputs)
            }
        )
    names = [o[0] for o in outputs]

    def key_of(node: exp.Expression) -> str:
        if isinstance(node, exp.Literal) and not node.is_string:
            return names[int(node.name) - 1]
        if isinstance(node, exp.Column) and node.name in names:
            return node.name
        raise _Unsupported(node.sql())

    result = _limit(tree, _sort(result, tree.args.get("order"), key_of))
    return {
        "columns": [{"name": n, "type": t} for n, t, _, _ in outputs],
        "rows": result,
        "truncated": False,
    }

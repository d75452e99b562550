"""Pass 5: parameters are always bound, never formatted in: ``:name`` and ``$1`` become
typed driver parameters ``CAST($n AS type)``; values are checked against declared types."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlglot import exp

from query_router.exceptions import ParameterError
from query_router.plan import Plan

PARAM_TYPES = {
    "text": "TEXT", "integer": "BIGINT", "bigint": "BIGINT", "float": "DOUBLE PRECISION",
    "double precision": "DOUBLE PRECISION", "numeric": "NUMERIC", "boolean": "BOOLEAN",
    "timestamptz": "TIMESTAMPTZ", "timestamp": "TIMESTAMP", "date": "DATE",
}  # fmt: skip


def param_name(node: exp.Expression, params: list[dict[str, Any]]) -> str:
    """The parameter a placeholder names: ``:name`` by name, ``$n`` by declaration order."""
    if isinstance(node, exp.Parameter):
        index = int(node.this.name if isinstance(node.this, exp.Expression) else node.this)
        if params and not 1 <= index <= len(params):
            raise ParameterError(
                f"${index} has no declared parameter (declared: {len(params)})",
                details={"parameter": f"${index}"},
            )
        return params[index - 1]["name"] if params else str(index)
    this = node.this
    return this.name if isinstance(this, exp.Expression) else str(this)


def bind_params(plan: Plan) -> Plan:
    """Check the caller's values and turn every placeholder into ``CAST($n AS type)``."""
    declared = {p["name"]: p for p in plan.params}
    plan.bound = bind_values(plan.params, plan.values, used_params(plan))
    positions: dict[str, int] = {}

    def transform(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder | exp.Parameter):
            name = param_name(node, plan.params)
            if name not in positions:
                plan.positional.append(name)
                positions[name] = len(plan.positional)
            ref = exp.Parameter(this=exp.Literal.number(positions[name]))
            ptype = declared.get(name, {}).get("type")
            if ptype:
                return exp.Cast(
                    this=ref, to=exp.DataType.build(PARAM_TYPES[ptype], dialect="postgres")
                )
            return ref
        return node

    plan.expression = plan.expression.transform(transform)
    return plan


def used_params(plan: Plan) -> set[str]:
    """Names of the parameters the query refers to."""
    return {
        param_name(n, plan.params) for n in plan.expression.find_all(exp.Placeholder, exp.Parameter)
    }


def coerce(name: str, ptype: str, value: Any) -> Any:
    """``value`` as a Python value of parameter type ``ptype``; ParameterError names ``name``."""
    if value is None:
        return None
    try:
        if ptype == "text":
            return str(value)
        if ptype in ("integer", "bigint"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if ptype in ("float", "double precision"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if ptype == "numeric":
            return Decimal(str(value))
        if ptype == "boolean":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "t", "1", "yes"):
                return True
            if text in ("false", "f", "0", "no"):
                return False
            raise ValueError
        if ptype in ("timestamptz", "timestamp"):
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if ptype == "date":
            return date.fromisoformat(str(value))
    except (ValueError, TypeError, InvalidOperation):
        raise ParameterError(
            f"parameter {name!r} must be of type {ptype}; got {value!r}",
            details={"parameter": name, "type": ptype},
        ) from None
    raise ParameterError(
        f"parameter {name!r} has unknown type {ptype!r}", details={"parameter": name}
    )


def check_declarations(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check declared parameters (name, type, optional default); return them normalised."""
    out, problems = [], []
    for i, p in enumerate(params or []):
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("name"), str)
            or not p["name"].isidentifier()
            or p["name"].startswith("_")
        ):
            problems.append(f"params[{i}]: needs a name that is an identifier not starting with _")
            continue
        ptype = str(p.get("type", "text")).lower()
        if ptype not in PARAM_TYPES:
            problems.append(
                f"params[{i}] ({p['name']}): type {ptype!r} is not one of {', '.join(PARAM_TYPES)}"
            )
            continue
        entry = {"name": p["name"], "type": ptype}
        if "default" in p:
            try:
                coerce(p["name"], ptype, p["default"])
            except ParameterError as exc:
                problems.append(f"params[{i}] default: {exc.message}")
            entry["default"] = p["default"]
        out.append(entry)
    if problems:
        raise ParameterError("; ".join(problems), details={"problems": problems})
    return out


def bind_values(
    params: list[dict[str, Any]], values: dict[str, Any], used: set[str]
) -> dict[str, Any]:
    """The driver's parameter dict: each used parameter coerced to its declared type."""
    declared = {p["name"]: p for p in params}
    values = {  # "$1" may also be given as "1"
        (params[int(k) - 1]["name"] if k.isdigit() and 0 < int(k) <= len(params) else k): v
        for k, v in (values or {}).items()
    }
    unknown = sorted(set(values) - set(declared)) if declared else []
    if unknown:
        raise ParameterError(
            f"unknown parameter(s): {', '.join(unknown)}", details={"unknown": unknown}
        )
    bound: dict[str, Any] = {}
    for name in used:
        p = declared.get(name)
        if name in values:
            bound[name] = coerce(name, p["type"], values[name]) if p else values[name]
        elif p and "default" in p:
            bound[name] = coerce(name, p["type"], p["default"])
        else:
            raise ParameterError(f"parameter {name!r} is required", details={"parameter": name})
    return bound

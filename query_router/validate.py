"""Pass 1: parse and validate the whole tree: one read-only SELECT, allowed functions only."""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from query_router.exceptions import QueryError
from query_router.plan import Plan

ALLOWED_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)
FORBIDDEN = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
    exp.Command, exp.Into, exp.Lock, exp.Copy, exp.Set, exp.Transaction, exp.Commit,
    exp.Rollback, exp.Grant, exp.TruncateTable,
)  # fmt: skip


def _where(node: exp.Expression) -> dict:
    meta = getattr(node, "meta", {}) or {}
    return {k: meta[k] for k in ("line", "col") if k in meta}


def validate(plan: Plan) -> Plan:
    """Parse ``plan.sql``; reject anything but a single read-only query."""
    try:
        statements = [s for s in sqlglot.parse(plan.sql, read="postgres") if s is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        raise QueryError(
            f"SQL does not parse at line {err.get('line', '?')}, column {err.get('col', '?')}: "
            f"{err.get('description', str(exc))}",
            details={"line": err.get("line"), "column": err.get("col")},
        ) from None
    except TokenError as exc:  # e.g. an unterminated string
        raise QueryError(f"SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"exactly one statement is allowed; got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, ALLOWED_ROOTS):
        raise QueryError(f"only SELECT queries are allowed; got {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, FORBIDDEN):
            raise QueryError(
                f"{node.key.upper()} is not allowed in an analyst query", details=_where(node)
            )
    plan.expression = tree
    return plan

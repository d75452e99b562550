"""Pass 1: parse and validate the whole tree, not only its top node.

One statement; a SELECT, WITH or set operation (UNION / INTERSECT / EXCEPT) at the top;
no statement of another kind anywhere inside (so no writable CTE), no SELECT INTO, no
locking clause, nothing sqlglot could only keep as an opaque ``Command``; functions
from :mod:`query_router.allowlist` only; no schema-qualified names (so no ``pg_catalog``
or ``information_schema``). Every error names the line and column it points at.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from query_router.allowlist import ALLOWED_FUNCTIONS
from query_router.exceptions import QueryError
from query_router.plan import Plan

ALLOWED_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)
_FORBIDDEN_NAMES = (
    "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command", "Into",
    "Lock", "Copy", "Set", "Transaction", "Commit", "Rollback", "Grant", "Revoke",
    "TruncateTable", "Describe", "Use", "Pragma", "Kill", "Cache", "Uncache", "Refresh",
    "Analyze", "LoadData", "Comment", "SetItem", "SessionParameter", "ObjectIdentifier",
    "Show", "Execute", "Declare", "Prepare", "Summarize", "Attach", "Detach", "Export",
    "Install", "Put", "Get",
)  # fmt: skip
FORBIDDEN = tuple(getattr(exp, n) for n in _FORBIDDEN_NAMES if hasattr(exp, n))
MARKER = "__cxd"  # names the engine itself uses; analysts' SQL may not contain them


def _where(node: exp.Expression) -> dict[str, int]:
    """Line and column of a node (or of the first descendant or ancestor that has them)."""
    for candidate in node.walk():
        meta = candidate.meta
        if "line" in meta:
            return {"line": meta["line"], "column": meta["col"]}
    parent = node.parent
    while parent is not None:
        if "line" in parent.meta:
            return {"line": parent.meta["line"], "column": parent.meta["col"]}
        parent = parent.parent
    return {"line": 1, "column": 1}


def reject(node: exp.Expression, message: str) -> QueryError:
    """A QueryError pointing at ``node``'s line and column."""
    at = _where(node)
    return QueryError(
        f"{message} (line {at['line']}, column {at['column']})",
        details={**at, "construct": node.key},
    )


def function_names(node: exp.Func) -> set[str]:
    """Names a function node may be known by: its Postgres name and sqlglot's key."""
    if isinstance(node, exp.Anonymous):
        return {str(node.this).lower()}
    return {node.key.lower(), *(n.lower() for n in type(node).sql_names())}


def parse_one_statement(sql: str) -> exp.Expression:
    """The single statement in ``sql``; QueryError with line and column otherwise."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        raise QueryError(
            f"SQL does not parse at line {err.get('line', '?')}, column {err.get('col', '?')}: "
            f"{err.get('description', str(exc))}",
            details={"line": err.get("line"), "column": err.get("col")},
        ) from None
    except TokenError as exc:
        raise QueryError(f"SQL does not parse: {exc}", details={"line": 1, "column": 1}) from None
    if len(statements) != 1:
        second = statements[1] if len(statements) > 1 else None
        at = _where(second) if second is not None else {"line": 1, "column": 1}
        raise QueryError(
            f"exactly one statement is allowed; got {len(statements)}"
            f" (line {at['line']}, column {at['column']})",
            details=at,
        )
    return statements[0]


def check_tree(tree: exp.Expression) -> None:
    """Raise QueryError at the first node an analyst query may not contain."""
    if not isinstance(tree, ALLOWED_ROOTS):
        raise reject(tree, f"only SELECT queries are allowed; got {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, FORBIDDEN):
            raise reject(node, f"{node.key.upper()} is not allowed in an analyst query")
        if isinstance(node, exp.Select) and node.args.get("locks"):
            raise reject(node, "locking clauses (FOR UPDATE / FOR SHARE) are not allowed")
        if isinstance(node, exp.Func):
            names = function_names(node)
            if not names & ALLOWED_FUNCTIONS:
                raise reject(node, f"function {sorted(names)[0]}() is not allowed")
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise reject(node, "schema-qualified functions are not allowed")
        if isinstance(node, exp.Column) and (node.args.get("db") or node.args.get("catalog")):
            raise reject(node, f"{node.sql()} names a schema; refer to datasets by name only")
        if isinstance(node, exp.Identifier) and MARKER in node.name.lower():
            raise reject(node, f"names containing {MARKER!r} are reserved")
        if isinstance(node, exp.Literal) and node.is_string and "\x00" in node.this:
            raise reject(node, "NUL characters are not allowed in strings")


@functools.lru_cache(maxsize=512)
def _validated(sql: str) -> exp.Expression:
    tree = parse_one_statement(sql)
    check_tree(tree)
    return tree


def validate(plan: Plan) -> Plan:
    """Parse ``plan.sql``; reject anything but a single read-only query."""
    # shared with later calls of the same text: passes before bind_params only read it,
    # and bind_params' transform works on a copy
    plan.expression = _validated(plan.sql)
    return plan

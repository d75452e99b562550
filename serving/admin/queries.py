"""Console pages for saved queries: list, editor with a parameter form, result table and
chart, the router's plan and freshness, and errors pointing at a line and column."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from cxd.errors import CxdError, NotFound
from query_router import explain
from query_router.bind_params import PARAM_TYPES
from query_router.saved import delete_query, get_query, list_queries, run_saved, save_query
from serving.admin import admin, state
from serving.admin.common import flash, stores
from serving.admin.session import admin_required
from serving.admin.state import NUMERIC

SHOWN_ROWS = 500  # the page shows this many result rows; the API serves them all


def _params_from_form() -> list[dict[str, Any]]:
    """Parameter declarations from the editor's repeated name/type/default fields."""
    out = []
    form = request.form
    for name, ptype, default in zip(
        form.getlist("param_name"), form.getlist("param_type"), form.getlist("param_default"),
        strict=False,
    ):  # fmt: skip
        if name.strip():
            entry: dict[str, Any] = {"name": name.strip(), "type": ptype}
            if default.strip():
                entry["default"] = default.strip()
            out.append(entry)
    return out


def _error(exc: CxdError) -> dict[str, Any]:
    details = exc.details if isinstance(exc.details, dict) else {}
    return {
        "message": exc.message,
        "line": details.get("line"),
        "column": details.get("column") or details.get("col"),
    }


def _editor(query: dict[str, Any], **extra: Any) -> str:
    return render_template(
        "admin/query.html", query=query, types=list(PARAM_TYPES), saved=extra.pop("saved", True),
        **extra,
    )  # fmt: skip


@admin.get("/queries")
@admin_required
def queries():
    return render_template("admin/queries.html", queries=list_queries(stores()))


@admin.get("/queries/new")
@admin_required
def query_new():
    return _editor({"name": "", "sql": "", "params": [], "refresh": None}, saved=False)


@admin.post("/queries")
@admin_required
def query_save():
    body = {
        "name": request.form.get("name", "").strip(),
        "sql": request.form.get("sql", ""),
        "params": _params_from_form(),
        "refresh": request.form.get("refresh", "").strip() or None,
    }
    try:
        saved = save_query(stores(), body)
    except CxdError as exc:
        return _editor(body, saved=False, error=_error(exc)), 400
    flash(f"saved query {saved['name']}")
    return redirect(url_for("admin.query", name=saved["name"]))


def _chart_of(result: dict[str, Any]) -> dict[str, Any] | None:
    """A chart of a result: x its first column, y its first other numeric column; a line
    over time when x is a time, else bars."""
    cols = result["columns"]
    if not cols or not result["rows"]:
        return None
    x = cols[0]
    numeric = [c["name"] for c in cols[1:] if c.get("type") in NUMERIC]
    if not numeric:
        return None
    y = numeric[0]
    rows = result["rows"][:SHOWN_ROWS]
    if x.get("type") in ("timestamptz", "timestamp", "date"):
        points = [state.chart_point(r[x["name"]], r[y], None, "batch") for r in rows]
        return {"kind": "line", "x": x["name"], "y": y, "points": [p for p in points if p]}
    bars = [{"label": str(r[x["name"]]), "value": float(r[y])} for r in rows if r[y] is not None]
    return {"kind": "bar", "x": x["name"], "y": y, "points": bars}


def _run(query: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    return run_saved(stores(), query["name"], values)


@admin.get("/queries/<name>")
@admin_required
def query(name: str):
    try:
        q = get_query(stores(), name)
    except NotFound:
        return _editor({"name": name, "sql": "", "params": []}, saved=False,
                       error={"message": f"no saved query named {name!r}"}), 404  # fmt: skip
    values = {p["name"]: request.args.get(f"v_{p['name']}", "") for p in q["params"]}
    filled = {k: v for k, v in values.items() if v != ""}
    result = plan = error = None
    try:
        plan = explain(stores(), q["sql"], q["params"])
        if "run" in request.args:
            result = _run(q, filled)
    except CxdError as exc:
        error = _error(exc)
    return _editor(
        q,
        values=values,
        plan=plan,
        result=result,
        shown=SHOWN_ROWS,
        chart=_chart_of(result) if result else None,
        error=error,
    )


@admin.post("/queries/<name>/delete")
@admin_required
def query_delete(name: str):
    try:
        delete_query(stores(), name)
        flash(f"deleted query {name}")
    except CxdError as exc:
        flash(exc.message, "error")
        return redirect(url_for("admin.query", name=name))
    return redirect(url_for("admin.queries"))

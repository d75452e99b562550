"""Console pages: login, overview, sources, runs, datasets, workers and queues."""

from __future__ import annotations

from typing import Any

import psycopg2
from flask import abort, jsonify, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from cxd.catalog import get_source, list_sources
from cxd.errors import CxdError, NotFound
from serving.admin import actions, admin, queues, state
from serving.admin.common import MASK, flash, int_arg, redact, stores
from serving.admin.session import COOKIE, TTL, admin_required, login, logout

# --- session ----------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("admin.overview")


@admin.get("/login")
def login_form():
    return render_template("admin/login.html", next=_safe_next(request.args.get("next")))


@admin.post("/login")
def login_submit():
    token = request.form.get("token", "").strip()
    target = _safe_next(request.form.get("next"))
    try:
        session_id = login(token)
    except CxdError as exc:
        html = render_template("admin/login.html", next=target, error=exc.message)
        return html, 401
    response = redirect(target)
    response.set_cookie(
        COOKIE, session_id, max_age=TTL, httponly=True, samesite="Lax", path="/admin",
        secure=request.is_secure,
    )  # fmt: skip
    return response


@admin.post("/logout")
@admin_required
def logout_submit():
    logout(request.cookies.get(COOKIE))
    response = redirect(url_for("admin.login_form"))
    response.delete_cookie(COOKIE, path="/admin")
    return response


# --- overview ---------------------------------------------------------------------------


def _overview_rows() -> list[dict[str, Any]]:
    rows = state.overview(stores(), list_sources(stores().db))
    return [{**r, "last_error": redact(r["last_error"])} for r in rows]


@admin.get("/")
@admin_required
def overview():
    return render_template("admin/overview.html", rows=_overview_rows())


@admin.get("/overview.part")
@admin_required
def overview_part():
    return render_template("admin/_overview_rows.html", rows=_overview_rows())


@admin.get("/overview.json")
@admin_required
def overview_json():
    return jsonify(_overview_rows())


# --- sources and runs -------------------------------------------------------------------


def _spec_or_404(name: str):
    try:
        return get_source(stores().db, name)
    except NotFound:
        abort(404, f"no source or dataset named {name!r}")


def _settings(spec) -> dict[str, Any]:
    """The source's declaration for display: every secret replaced by a mask."""
    body = spec.public()
    body["secrets"] = {name: MASK for name in body["secrets"]}
    return body


@admin.get("/sources/<name>")
@admin_required
def source(name: str):
    spec = _spec_or_404(name)
    before = int_arg("before")
    runs = state.runs_page(stores().db, name, before)
    paused = stores().db.fetchone("SELECT paused FROM cxd.sources WHERE name = %s", (name,))
    return render_template(
        "admin/source.html",
        spec=spec,
        settings=_settings(spec),
        schedule=state.describe_schedule(spec),
        next_run=state.next_runs(stores(), [spec]).get(name),
        paused=bool(paused and paused["paused"]),
        runs=runs,
        before=before,
        older=runs[-1]["id"] if len(runs) == state.PAGE else None,
        stats=state.run_stats(stores().db, name),
        health=state.health(stores(), name),
    )


@admin.get("/sources/<name>/runs.part")
@admin_required
def source_runs_part(name: str):
    return render_template("admin/_runs_rows.html", runs=state.runs_page(stores().db, name))


@admin.get("/sources/<name>/runs.json")
@admin_required
def source_runs_json(name: str):
    runs = state.runs_page(stores().db, name, int_arg("before"))
    return jsonify([{**r, "error": redact(r["error"])} for r in runs])


@admin.post("/sources/<name>/actions/<action>")
@admin_required
def source_action(name: str, action: str):
    _spec_or_404(name)
    form = request.form
    todo = {
        "run": lambda: actions.run_now(stores(), name, "incremental"),
        "full": lambda: actions.run_now(stores(), name, "full"),
        "backfill": lambda: actions.backfill(stores(), name, form.get("from"), form.get("to")),
        "reprocess": lambda: actions.reprocess(stores(), name),
        "pause": lambda: actions.set_paused(stores(), name, True),
        "resume": lambda: actions.set_paused(stores(), name, False),
    }
    if action not in todo:
        abort(404, f"no action {action!r}")
    try:
        flash(todo[action]())
    except CxdError as exc:
        flash(exc.message, "error")
    return redirect(url_for("admin.source", name=name))


@admin.get("/runs/<int:run_id>")
@admin_required
def run(run_id: int):
    record = state.run_detail(stores().db, run_id)
    if record is None:
        abort(404, f"no run {run_id}")
    return render_template("admin/run.html", run=record)


# --- datasets ---------------------------------------------------------------------------


def _filters(spec) -> dict[str, str]:
    names = [*spec.column_names, "time_from", "time_to", "current"]
    return {n: request.args.get(f"f_{n}", "").strip() for n in names}


def _chart(spec, filters: dict[str, str]) -> dict[str, Any]:
    axes = state.chart_columns(spec, request.args.get("y"))
    points = state.batch_points(stores().db, spec, axes, filters)
    watermark = stores().db.fetchone(
        "SELECT stream_id FROM cxd.watermarks WHERE dataset = %s", (spec.name,)
    )
    live, after = state.speed_points(
        stores(), spec, axes, watermark["stream_id"] if watermark else "0-0"
    )
    merged = sorted(points + live, key=lambda p: p["x"])[-state.CHART_POINTS :]
    current = state.current_values(stores(), spec, axes) if spec.kind == "instantaneous" else []
    return {"axes": axes, "points": merged, "after": after, "current": current}


@admin.get("/datasets/<name>")
@admin_required
def dataset(name: str):
    spec = _spec_or_404(name)
    columns = state.columns(stores().db, name)
    versioned = any(c["name"] == "_valid_to" for c in columns)
    filters = _filters(spec) | ({} if versioned else {"current": ""})
    before = int_arg("before")
    error = None
    try:
        rows = state.preview(stores().db, spec, filters, before)
        chart = _chart(spec, filters)
    except psycopg2.Error as exc:  # a bad filter value, or a filter too slow to answer
        rows = []
        chart = {"axes": state.chart_columns(spec), "points": [], "after": "0-0", "current": []}
        error = str(exc).strip().splitlines()[0]
    return render_template(
        "admin/dataset.html",
        spec=spec,
        columns=columns,
        versioned=versioned,
        filters=filters,
        rows=rows,
        before=before,
        older=rows[-1]["_seq"] if len(rows) == state.PAGE else None,
        chart=chart,
        error=error,
        quarantine=state.quarantine(stores().db, name, int_arg("q_before")),
        has_quarantine=state.table_exists(stores().db, "cxd.quarantine"),
        events=state.quality_events(stores().db, name, int_arg("e_before")),
        has_events=state.table_exists(stores().db, "cxd.quality_events"),
    )


@admin.get("/datasets/<name>/points.json")
@admin_required
def dataset_points(name: str):
    """Live chart points from the speed layer after stream id ``after``."""
    spec = _spec_or_404(name)
    axes = state.chart_columns(spec, request.args.get("y"))
    after = request.args.get("after") or "0-0"
    try:
        state.stream.parse_id(after)
    except ValueError:
        abort(400, "after must be a stream id like 1700000000000-0")
    points, last = state.speed_points(stores(), spec, axes, after)
    return jsonify({"points": points, "after": last})


@admin.get("/datasets/<name>/current.json")
@admin_required
def dataset_current(name: str):
    """The current value per entity of an instantaneous dataset, from the speed layer."""
    spec = _spec_or_404(name)
    axes = state.chart_columns(spec, request.args.get("y"))
    return jsonify(state.current_values(stores(), spec, axes))


# --- workers and queues -----------------------------------------------------------------


@admin.get("/workers")
@admin_required
def workers():
    offset = max(int_arg("offset") or 0, 0)
    redis = stores().redis
    return render_template(
        "admin/workers.html",
        queues=queues.queues(redis),
        workers=queues.workers(redis),
        failed=queues.failed_jobs(redis, offset),
        offset=offset,
    )


@admin.post("/jobs/<job_id>/retry")
@admin_required
def job_retry(job_id: str):
    try:
        flash(queues.retry(stores().redis, job_id))
    except CxdError as exc:
        flash(exc.message, "error")
    return redirect(url_for("admin.workers"))


@admin.after_request
def no_store(response):
    """Console pages are live state: never cache them (the login cookie rides on them)."""
    if request.endpoint != "admin.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return make_response(response)


@admin.errorhandler(HTTPException)
@admin.errorhandler(CxdError)
def error_page(exc: HTTPException | CxdError):
    """Console pages answer errors as a page; their JSON endpoints as the API does."""
    status = exc.code if isinstance(exc, HTTPException) else exc.status
    message = exc.description if isinstance(exc, HTTPException) else exc.message
    if request.path.endswith((".json", ".part")):
        body = {"error": {"code": "console_error", "message": redact(message), "details": None}}
        return jsonify(body), status
    return render_template("admin/error.html", status=status, message=message), status

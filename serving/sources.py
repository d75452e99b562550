"""REST API for sources and their runs (``/api/sources``, ``/api/runs``).

Sources are declared with the same shape as in ``cxd.yml``. Secrets are write-only:
responses list their names, never their values.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request

from batch import runs
from batch.jobs import enqueue_run
from batch.schedule import entry_ids, register_schedules, scheduler
from batch.tables import drop_dataset, register_dataset
from cxd.catalog import (
    SourceSpec,
    delete_source,
    get_source,
    list_sources,
    parse_source,
    save_source,
)
from cxd.errors import BadInput, NotFound
from plugins.exceptions import PluginConfigError
from plugins.health import clear_health, read_health
from plugins.registry import plugin_for, plugin_types
from query_router.router import forget_catalog
from serving.api import body, stores
from serving.auth import needs
from speed.stream import forget

log = logging.getLogger(__name__)

sources_api = Blueprint("sources_api", __name__, url_prefix="/api")


def _shown(spec: SourceSpec) -> dict[str, Any]:
    """A source as the API shows it: the declaration (secrets by name only) and its health."""
    body = spec.public()
    body["health"] = read_health(stores().redis, spec.name)
    return body


def _checked(raw: Any, where: str = "body") -> SourceSpec:
    """The declaration parsed and its plugin's settings checked; 400 lists every problem."""
    spec = parse_source(raw, where=where)
    if not spec.plugin and spec.type not in plugin_types():
        return spec  # a built-in type whose plugin this install lacks: checked at run time
    try:
        plugin_for(spec, stores().settings.plugin_dir)
    except PluginConfigError as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        problems = details.get("problems") or [exc.message]
        raise BadInput(
            f"{where} has {len(problems)} problem(s): " + "; ".join(problems),
            details={"problems": [f"{where}.options: {p}" for p in problems]},
        ) from None
    return spec


def _merge_secrets(raw: dict[str, Any], old: SourceSpec) -> dict[str, Any]:
    """The body with its secrets completed from the stored ones.

    Secrets are write-only, so a client that GETs a source and PUTs it back sends only
    their names (a list): those keep their stored values. A mapping sets new values; a
    null value removes that secret; names not mentioned keep their stored values.
    """
    incoming = raw.get("secrets")
    merged = dict(old.secrets)
    if isinstance(incoming, list):
        merged = {k: v for k, v in merged.items() if k in incoming}
    elif isinstance(incoming, dict):
        for key, value in incoming.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    elif incoming is not None:
        return raw  # parse_source reports the wrong shape
    return {**raw, "secrets": merged}


def cancel_schedules(old: SourceSpec, new: SourceSpec | None = None) -> list[str]:
    """Cancel the schedule entries of ``old`` that ``new`` no longer wants as they are."""
    wanted = entry_ids(new) if new else {}
    sch = scheduler(stores())
    cancelled = []
    for job_id, definition in entry_ids(old).items():
        if wanted.get(job_id) != definition:
            sch.cancel(job_id)
            cancelled.append(job_id)
    return cancelled


def drop_data(name: str) -> None:
    """Drop a dataset's tables, metadata rows and Redis keys."""
    drop_dataset(stores().db, name)
    forget(stores().redis, name)


@sources_api.get("/sources")
@needs("read")
def sources_list():
    return jsonify([_shown(s) for s in list_sources(stores().db)])


@sources_api.post("/sources")
@needs("admin")
def sources_create():
    spec = _checked(body())
    try:
        get_source(stores().db, spec.name)
    except NotFound:
        pass
    else:
        raise BadInput(
            f"a source named {spec.name!r} exists; PUT /api/sources/{spec.name} changes it",
            status=409,
        )
    register_dataset(stores().db, spec)
    save_source(stores().db, spec, origin="api")
    forget_catalog()  # the router sees the change on its next query
    register_schedules(stores(), [spec])
    log.info("source %s declared (%s, %s)", spec.name, spec.type, spec.kind)
    return jsonify(_shown(spec)), 201


@sources_api.get("/sources/<name>")
@needs("read")
def sources_get(name: str):
    return jsonify(_shown(get_source(stores().db, name)))


@sources_api.put("/sources/<name>")
@needs("admin")
def sources_update(name: str):
    old = get_source(stores().db, name)
    raw = body()
    if not isinstance(raw, dict):
        raise BadInput("the body must be a source declaration (a JSON object)")
    raw = {"name": name, **raw}
    if raw["name"] != name:
        raise BadInput(
            f"the body names {raw['name']!r} but the path {name!r}; a source cannot be renamed"
        )
    spec = _checked(_merge_secrets(raw, old))
    register_dataset(stores().db, spec)
    save_source(stores().db, spec, origin="api")
    forget_catalog()  # the router sees the change on its next query
    cancelled = cancel_schedules(old, spec)
    register_schedules(stores(), [spec])
    log.info("source %s changed; %d schedule entries replaced", name, len(cancelled))
    return jsonify(_shown(spec))


@sources_api.delete("/sources/<name>")
@needs("admin")
def sources_delete(name: str):
    spec = get_source(stores().db, name)
    drop = request.args.get("drop_data", "false").lower() in ("1", "true", "yes")
    cancel_schedules(spec)
    delete_source(stores().db, name)
    forget_catalog()
    clear_health(stores().redis, name)
    if drop:
        drop_data(name)
    log.info("source %s deleted%s", name, " with its data" if drop else "; its data is kept")
    return jsonify({"deleted": name, "data_dropped": drop})


@sources_api.post("/sources/<name>/runs")
@needs("admin")
def runs_create(name: str):
    data = request.get_json(silent=True) or {}
    mode = data.get("mode", "incremental") if isinstance(data, dict) else None
    return jsonify({"run_id": enqueue_run(stores(), name, mode)}), 202


@sources_api.get("/runs/<int:run_id>")
@needs("read")
def runs_get(run_id: int):
    return jsonify(runs.get_run(stores().db, run_id))


@sources_api.get("/runs")
@needs("read")
def runs_list():
    return jsonify(runs.list_runs(stores().db, request.args.get("dataset")))

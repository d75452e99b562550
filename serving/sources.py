"""REST API for sources and their runs (``/api/sources``, ``/api/runs``)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from batch import runs
from batch.jobs import enqueue_run
from batch.tables import register_dataset
from cxd.catalog import get_source, list_sources, parse_source, save_source
from cxd.errors import BadInput, NotFound
from serving.api import body, stores
from serving.auth import needs

sources_api = Blueprint("sources_api", __name__, url_prefix="/api")


@sources_api.get("/sources")
@needs("read")
def sources_list():
    return jsonify([s.public() for s in list_sources(stores().db)])


@sources_api.post("/sources")
@needs("admin")
def sources_create():
    spec = parse_source(body(), where="body")
    try:
        get_source(stores().db, spec.name)
    except NotFound:
        pass
    else:
        raise BadInput(
            f"a source named {spec.name!r} exists; PUT /api/sources/{spec.name} changes it",
            status=409,
        )
    save_source(stores().db, spec, origin="api")
    register_dataset(stores().db, spec)
    return jsonify(spec.public()), 201


@sources_api.get("/sources/<name>")
@needs("read")
def sources_get(name: str):
    return jsonify(get_source(stores().db, name).public())


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

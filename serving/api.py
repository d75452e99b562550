"""REST API (``/api``): health, datasets, saved queries, ad-hoc SQL (sources and runs: serving/sources.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from batch import runs
from batch.load import get_watermark
from cxd.catalog import get_source, list_sources
from cxd.errors import BadInput
from cxd.stores import Stores
from query_router import explain, run_query
from query_router.saved import delete_query, get_query, list_queries, run_saved, save_query
from serving.auth import needs
from speed.stream import backlog, high_water, latest

api = Blueprint("api", __name__, url_prefix="/api")


def stores() -> Stores:
    """The open stores of this app."""
    return current_app.extensions["cxd.stores"]


def body() -> Any:
    """The request's JSON body, or a 400 saying it is missing."""
    data = request.get_json(silent=True)
    if data is None:
        raise BadInput("the request body must be JSON")
    return data


def query_values() -> dict[str, str]:
    """Saved-query parameter values from the query string (``?machine=M1&shift=2``)."""
    return {k: v for k, v in request.args.items() if k != "token"}


@api.get("/health")
@needs("read")
def health():
    """Both stores answer."""
    stores().db.fetchone("SELECT 1 AS ok")
    stores().redis.ping()
    return jsonify({"status": "ok"})


# --- datasets ---------------------------------------------------------------------------


def dataset_info(name: str) -> dict[str, Any]:
    """Schema, kind, rows, watermark, speed backlog and last run of a dataset."""
    spec = get_source(stores().db, name)
    rows = stores().db.fetchone(
        "SELECT coalesce(c.reltuples, 0)::bigint AS n FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'raw' AND c.relname = %s",
        (name,),
    )
    last = runs.list_runs(stores().db, name, limit=1)
    return {
        "name": name,
        "kind": spec.kind,
        "columns": [{"name": c.name, "type": c.type} for c in spec.columns],
        "key": spec.key,
        "time_column": spec.time_column,
        "rows_estimate": max(int(rows["n"]), 0) if rows else 0,
        "watermark": get_watermark(stores().db, name),
        "speed_high_water": high_water(stores().redis, name),
        "speed_backlog": backlog(stores().redis, name),
        "last_run": last[0] if last else None,
    }


@api.get("/datasets")
@needs("read")
def datasets_list():
    return jsonify([dataset_info(s.name) for s in list_sources(stores().db)])


@api.get("/datasets/<name>")
@needs("read")
def datasets_get(name: str):
    return jsonify(dataset_info(name))


def latest_values(name: str) -> dict[str, Any]:
    """The latest record of every entity of a dataset, straight from the speed layer."""
    spec = get_source(stores().db, name)
    hw = high_water(
        stores().redis, name
    )  # read before the values: the answer is at least this fresh
    rows = latest(stores().redis, name)
    rows.sort(key=lambda r: [str(r.get(k)) for k in spec.key])
    return {
        "dataset": name,
        "key": spec.key,
        "rows": rows,
        "freshness": {
            "plan": "speed",
            "batch_watermark": get_watermark(stores().db, name)["stream_id"],
            "speed_high_water": hw,
        },
    }


@api.get("/datasets/<name>/latest")
@needs("read")
def datasets_latest(name: str):
    """Instantaneous values: the latest record per entity key, from Redis only."""
    return jsonify(latest_values(name))


# --- queries ----------------------------------------------------------------------------


@api.post("/queries")
@needs("analyst")
def queries_save():
    return jsonify(save_query(stores(), body())), 201


@api.get("/queries")
@needs("read")
def queries_list():
    return jsonify(list_queries(stores()))


@api.get("/queries/<name>")
@needs("read")
def queries_get(name: str):
    return jsonify(get_query(stores(), name))


@api.put("/queries/<name>")
@needs("analyst")
def queries_replace(name: str):
    """Replace a saved query; the body's name, if given, must be the one in the path."""
    data = body()
    if not isinstance(data, dict):
        raise BadInput("a saved query must be a JSON object with sql, params, outputs")
    if data.get("name", name) != name:
        raise BadInput(f"the body names {data.get('name')!r} but the path names {name!r}")
    get_query(stores(), name)  # 404 for an unknown query: PUT does not create
    return jsonify(save_query(stores(), {**data, "name": name}))


@api.delete("/queries/<name>")
@needs("analyst")
def queries_delete(name: str):
    delete_query(stores(), name)
    return "", 204


@api.get("/queries/<name>/results")
@needs("read")
def queries_results(name: str):
    return jsonify(run_saved(stores(), name, query_values()))


@api.get("/queries/<name>/plan")
@needs("read")
def queries_plan(name: str):
    q = get_query(stores(), name)
    return jsonify(explain(stores(), q["sql"], q["params"]))


@api.post("/sql")
@needs("analyst")
def sql_adhoc():
    data = body()
    if not isinstance(data, dict) or not isinstance(data.get("sql"), str):
        raise BadInput('send {"sql": "...", "params": {...}}')
    values = data.get("params") or {}
    if not isinstance(values, dict):
        raise BadInput("params must be an object of name -> value")
    return jsonify(run_query(stores(), data["sql"], None, values))

"""``GET /api/openapi.json``: the OpenAPI 3 document of every REST route of cxd-server.

The document is written out by hand, next to the routes it describes; the serving tests
check that every ``/api`` route the app serves is in it and run Schemathesis against it,
so a response that drifts from it fails a test.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

import cxd
from batch.runs import STATUSES
from cxd.catalog import COLUMN_TYPES, KINDS, SOURCE_TYPES
from serving.auth import needs

openapi_api = Blueprint("openapi", __name__)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


STRING = {"type": "string"}
TIMESTAMP = nullable({"type": "string", "format": "date-time"})
JSON_OBJECT = {"type": "object", "additionalProperties": True}
ANY = {}  # any JSON value

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {"code": STRING, "message": STRING, "details": ANY},
            }
        },
    },
    "Column": {
        "type": "object",
        "required": ["name", "type"],
        "properties": {"name": STRING, "type": STRING},
    },
    "Freshness": {
        "type": "object",
        "description": "How fresh an answer is: batch watermark, speed high-water mark, plan.",
        "required": ["plan"],
        "properties": {
            "plan": {"type": "string", "enum": ["batch", "speed", "merge"]},
            "batch_watermark": nullable(STRING),
            "speed_high_water": nullable(STRING),
            "stale": {"type": "boolean"},
            "datasets": JSON_OBJECT,
        },
    },
    "Run": {
        "type": "object",
        "required": ["id", "dataset", "status"],
        "properties": {
            "id": {"type": "integer"},
            "dataset": STRING,
            "mode": STRING,
            "status": {"type": "string", "enum": list(STATUSES)},
            "job_id": nullable(STRING),
            "queued_at": TIMESTAMP,
            "started_at": TIMESTAMP,
            "finished_at": TIMESTAMP,
            "rows_fetched": {"type": "integer"},
            "rows_loaded": {"type": "integer"},
            "rows_quarantined": {"type": "integer"},
            "error": nullable(STRING),
            "error_step": nullable(STRING),
            "log": {"type": "array", "items": JSON_OBJECT},
        },
    },
    "Watermark": {
        "type": "object",
        "required": ["stream_id"],
        "properties": {
            "stream_id": {"type": "string", "description": "highest stream id loaded into raw"},
            "cursor": ANY,
            "refreshed_at": TIMESTAMP,
        },
    },
    "Dataset": {
        "type": "object",
        "required": ["name", "kind", "columns", "key", "watermark", "speed_backlog"],
        "properties": {
            "name": STRING,
            "kind": {"type": "string", "enum": list(KINDS)},
            "columns": {"type": "array", "items": ref("Column")},
            "key": {"type": "array", "items": STRING},
            "time_column": nullable(STRING),
            "rows_estimate": {"type": "integer", "minimum": 0},
            "watermark": ref("Watermark"),
            "speed_high_water": STRING,
            "speed_backlog": {"type": "integer", "minimum": 0},
            "last_run": {**ref("Run"), "nullable": True},
        },
    },
    "SourceInput": {
        "type": "object",
        "description": "One source declaration, the shape of an entry of cxd.yml.",
        "required": ["name", "type", "columns"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            "type": {"type": "string", "enum": list(SOURCE_TYPES)},
            "kind": {"type": "string", "enum": list(KINDS)},
            "options": JSON_OBJECT,
            "columns": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "type"],
                    "properties": {
                        "name": STRING,
                        "type": {"type": "string", "enum": list(COLUMN_TYPES)},
                    },
                },
            },
            "key": {"type": "array", "items": STRING},
            "time_column": STRING,
            "schedule": JSON_OBJECT,
            "checks": {"type": "array", "items": JSON_OBJECT},
            "secrets": {
                "type": "object",
                "description": "write-only: never returned",
                "additionalProperties": STRING,
            },
            "description": STRING,
        },
    },
    "Page": {
        "type": "object",
        "required": ["name", "queries", "inputs"],
        "properties": {
            "name": STRING,
            "queries": {"type": "array", "items": STRING},
            "inputs": {"type": "array", "items": {"type": "object"}},
        },
    },
    "PageInput": {
        "type": "object",
        "required": ["name", "queries"],
        "properties": {
            "name": STRING,
            "queries": {"type": "array", "items": STRING, "minItems": 1},
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": STRING, "type": STRING},
                },
            },
        },
    },
    "LiveStats": {
        "type": "object",
        "required": ["connections", "subscriptions", "groups"],
        "properties": {
            "connections": {"type": "integer"},
            "max_connections": {"type": "integer"},
            "subscriptions": {"type": "integer"},
            "notifications": {"type": "integer"},
            "groups": {"type": "array", "items": {"type": "object"}},
            "feeds": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "Source": {
        "type": "object",
        "required": ["name", "type", "kind", "columns", "secrets"],
        "properties": {
            "name": STRING,
            "type": STRING,
            "kind": STRING,
            "options": JSON_OBJECT,
            "columns": {"type": "array", "items": ref("Column")},
            "key": {"type": "array", "items": STRING},
            "time_column": nullable(STRING),
            "schedule": JSON_OBJECT,
            "checks": {"type": "array", "items": JSON_OBJECT},
            "secrets": {
                "type": "array",
                "items": STRING,
                "description": "names of the stored secrets; their values are never shown",
            },
            "description": STRING,
        },
    },
    "Param": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": STRING,
            "type": {"type": "string", "description": "text, integer, double precision, ..."},
            "default": ANY,
        },
    },
    "SavedQueryInput": {
        "type": "object",
        "required": ["sql"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            "sql": STRING,
            "params": {"type": "array", "items": ref("Param")},
            "outputs": {"type": "array", "items": ref("Column")},
            "refresh": nullable({"type": "string", "description": "e.g. 5s, 1m"}),
        },
    },
    "SavedQuery": {
        "type": "object",
        "required": ["name", "sql", "params", "outputs"],
        "properties": {
            "name": STRING,
            "sql": STRING,
            "params": {"type": "array", "items": ref("Param")},
            "outputs": {"type": "array", "items": ref("Column")},
            "refresh": nullable(STRING),
        },
    },
    "Result": {
        "type": "object",
        "required": ["columns", "rows", "freshness"],
        "properties": {
            "columns": {"type": "array", "items": ref("Column")},
            "rows": {"type": "array", "items": JSON_OBJECT},
            "truncated": {"type": "boolean"},
            "freshness": ref("Freshness"),
        },
    },
    "Plan": {
        "type": "object",
        "required": ["plan"],
        "properties": {
            "plan": {"type": "string", "enum": ["batch", "speed", "merge"]},
            "datasets": JSON_OBJECT,
            "notes": {"type": "array", "items": STRING},
            "sql": STRING,
        },
    },
    "Changes": {
        "type": "object",
        "required": ["rows", "next"],
        "properties": {
            "rows": {"type": "array", "items": JSON_OBJECT},
            "next": nullable({"type": "string", "description": "opaque cursor for ?since="}),
            "freshness": JSON_OBJECT,
        },
    },
    "Latest": {
        "type": "object",
        "required": ["dataset", "key", "rows", "freshness"],
        "properties": {
            "dataset": STRING,
            "key": {"type": "array", "items": STRING},
            "rows": {"type": "array", "items": JSON_OBJECT},
            "freshness": ref("Freshness"),
        },
    },
}

ERRORS = {
    "400": "the request is not valid; the message and details say what and where",
    "401": "no token, or a token that is not valid",
    "403": "the token's role is not enough",
    "404": "no such name",
    "409": "the name is taken",
    "503": "try again later (Retry-After)",
}


def op(
    summary: str,
    role: str,
    ok: dict[str, Any],
    *,
    errors: tuple[str, ...] = (),
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation: its success responses, the errors it can answer with, its role."""
    responses = dict(ok)
    for status in ("401", "403", *errors):
        responses[status] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": ref("Error")}},
        }
    out: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs a token with the `{role}` role.",
        "responses": responses,
    }
    if body:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if params:
        out["parameters"] = params
    return out


def json_ok(schema: dict[str, Any], status: str = "200", description: str = "OK") -> dict:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def path_param(name: str, example: Any, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or STRING,
        "example": example,
    }


DATASET = path_param("name", "weather")
QUERY = path_param("name", "temps")
QUERY_VALUES = {
    "name": "values",
    "in": "query",
    "required": False,
    "description": "the saved query's parameters, one query-string field each (?machine=M1)",
    "schema": {"type": "object", "additionalProperties": STRING},
    "style": "form",
    "explode": True,
}
NO_CONTENT = {"204": {"description": "deleted"}}


def paths() -> dict[str, Any]:
    """Every REST route, by path and method."""
    array = lambda name: {"type": "array", "items": ref(name)}  # noqa: E731
    return {
        "/api/health": {
            "get": op(
                "Both stores answer",
                "read",
                json_ok(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["ok"]}},
                    }
                ),
            )
        },
        "/api/sources": {
            "get": op("Every declared source", "read", json_ok(array("Source"))),
            "post": op(
                "Declare a source",
                "admin",
                json_ok(ref("Source"), "201", "declared"),
                errors=("400", "409"),
                body="SourceInput",
            ),
        },
        "/api/sources/{name}": {
            "parameters": [DATASET],
            "get": op("One source", "read", json_ok(ref("Source")), errors=("404",)),
            "put": op(
                "Replace a source's declaration",
                "admin",
                json_ok(ref("Source")),
                errors=("400", "404"),
                body="SourceInput",
            ),
            "delete": op(
                "Stop a source; its data is kept unless drop_data=true",
                "admin",
                json_ok(
                    {
                        "type": "object",
                        "required": ["deleted", "data_dropped"],
                        "properties": {
                            "deleted": {"type": "string"},
                            "data_dropped": {"type": "boolean"},
                        },
                    }
                ),
                errors=("404",),
                params=[
                    {
                        "name": "drop_data",
                        "in": "query",
                        "required": False,
                        "description": "true: also drop the dataset's tables and live events",
                        "schema": {"type": "boolean"},
                    }
                ],
            ),
        },
        "/api/sources/{name}/runs": {
            "parameters": [DATASET],
            "post": op(
                "Start a run of a source",
                "admin",
                json_ok(
                    {
                        "type": "object",
                        "required": ["run_id"],
                        "properties": {"run_id": {"type": "integer"}},
                    },
                    "202",
                    "queued",
                ),
                errors=("400", "404"),
                body="RunRequest",
            ),
        },
        "/api/runs": {
            "get": op(
                "The newest runs",
                "read",
                json_ok(array("Run")),
                params=[{"name": "dataset", "in": "query", "required": False, "schema": STRING}],
            )
        },
        "/api/runs/{run_id}": {
            "parameters": [path_param("run_id", 1, {"type": "integer", "minimum": 0})],
            "get": op("One run", "read", json_ok(ref("Run")), errors=("404",)),
        },
        "/api/datasets": {"get": op("Every dataset", "read", json_ok(array("Dataset")))},
        "/api/datasets/{name}": {
            "parameters": [DATASET],
            "get": op(
                "Schema, kind, rows, watermark, speed backlog, last run",
                "read",
                json_ok(ref("Dataset")),
                errors=("404",),
            ),
        },
        "/api/datasets/{name}/changes": {
            "parameters": [DATASET],
            "get": op(
                "Rows changed since a cursor or a time, across both layers",
                "read",
                json_ok(ref("Changes")),
                errors=("400", "404"),
                params=[
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "description": "a cursor from `next`, or an ISO 8601 timestamp",
                        "schema": STRING,
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1},
                    },
                ],
            ),
        },
        "/api/datasets/{name}/latest": {
            "parameters": [DATASET],
            "get": op(
                "The latest value of every entity, from the speed layer",
                "read",
                json_ok(ref("Latest")),
                errors=("404",),
            ),
        },
        "/api/pages": {
            "get": op("Every page (saved queries sharing inputs)", "read", json_ok(array("Page"))),
            "post": op(
                "Save a page (replaces one of the same name)",
                "analyst",
                json_ok(ref("Page"), "201", "saved"),
                errors=("400",),
                body="PageInput",
            ),
        },
        "/api/pages/{name}": {
            "parameters": [path_param("name", "factory")],
            "get": op("One page", "read", json_ok(ref("Page")), errors=("404",)),
            "delete": op("Delete a page", "analyst", NO_CONTENT, errors=("404",)),
        },
        "/api/live": {
            "get": op(
                "Websocket connections, subscriptions and shared evaluations of this process",
                "read",
                json_ok(ref("LiveStats")),
            )
        },
        "/api/queries": {
            "get": op("Every saved query", "read", json_ok(array("SavedQuery"))),
            "post": op(
                "Save a query (replaces one of the same name)",
                "analyst",
                json_ok(ref("SavedQuery"), "201", "saved"),
                errors=("400",),
                body="SavedQueryInput",
            ),
        },
        "/api/queries/{name}": {
            "parameters": [QUERY],
            "get": op("One saved query", "read", json_ok(ref("SavedQuery")), errors=("404",)),
            "put": op(
                "Replace a saved query",
                "analyst",
                json_ok(ref("SavedQuery")),
                errors=("400", "404"),
                body="SavedQueryInput",
            ),
            "delete": op("Forget a saved query", "analyst", NO_CONTENT, errors=("404",)),
        },
        "/api/queries/{name}/results": {
            "parameters": [QUERY],
            "get": op(
                "Run a saved query",
                "read",
                json_ok(ref("Result")),
                errors=("400", "404", "503"),
                params=[QUERY_VALUES],
            ),
        },
        "/api/queries/{name}/plan": {
            "parameters": [QUERY],
            "get": op(
                "The router's decision for a saved query",
                "read",
                json_ok(ref("Plan")),
                errors=("400", "404"),
                params=[QUERY_VALUES],
            ),
        },
        "/api/sql": {
            "post": op(
                "Ad-hoc read-only SQL",
                "analyst",
                json_ok(ref("Result")),
                errors=("400", "503"),
                body="SqlRequest",
            )
        },
        "/api/openapi.json": {
            "get": op("This document", "read", json_ok(JSON_OBJECT)),
        },
        "/metrics": {
            "get": op(
                "Prometheus metrics",
                "read",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": STRING}},
                    }
                },
            )
        },
    }


SCHEMAS["RunRequest"] = {
    "type": "object",
    "properties": {"mode": {"type": "string", "enum": ["incremental", "full"]}},
}
SCHEMAS["SqlRequest"] = {
    "type": "object",
    "required": ["sql"],
    "properties": {
        "sql": STRING,
        "params": {"type": "object", "additionalProperties": True},
    },
}


def document(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cxd",
            "version": cxd.__version__,
            "description": "REST API of cxd-server. Errors are "
            '`{"error": {"code", "message", "details"}}`. GraphQL is at /graphql, '
            "websocket push at /ws.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@openapi_api.get("/api/openapi.json")
@needs("read")
def openapi_json():
    return jsonify(document(request.host_url))

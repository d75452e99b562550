"""GraphQL at ``/graphql`` (graphene): datasets, runs, sources and one typed field per saved
query; mutations to save queries and trigger runs; subscriptions over the
``graphql-transport-ws`` protocol on the same path; GraphiQL for browsers.

Every document passes the limits (size, tokens, depth, aliases) and the standard
validation before any resolver runs. The schema is rebuilt when the saved queries change.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import date, datetime
from typing import Any

import graphene
from flask import Blueprint, Flask, current_app, jsonify, render_template_string, request
from flask_sock import Sock
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    execute,
    get_operation_ast,
    parse,
    validate,
)
from graphql.error import GraphQLSyntaxError
from simple_websocket import ConnectionClosed

from batch import runs
from batch.jobs import enqueue_run
from cxd.auth import IMPLIES, role_of, token_from_header
from cxd.catalog import get_source, list_sources, parse_duration
from cxd.errors import CxdError, Forbidden
from serving.api import dataset_info, delete_query, run_saved
from serving.auth import needs
from speed.keys import notify_channel
from speed.stream import backlog, high_water, read_after

log = logging.getLogger(__name__)

graphql_api = Blueprint(
    "graphql", __name__, static_folder="static", static_url_path="/graphql/static"
)
sock = Sock()

# Limits, each overridable in the app config (``CXD_GRAPHQL_MAX_DEPTH`` ...).
LIMITS = {
    "CXD_GRAPHQL_MAX_BYTES": 65_536,  # document size
    "CXD_GRAPHQL_MAX_TOKENS": 10_000,  # lexical tokens
    "CXD_GRAPHQL_MAX_DEPTH": 20,  # nested selection sets (the introspection query needs 15)
    "CXD_GRAPHQL_MAX_ALIASES": 100,  # aliased fields, counting fragments where they are spread
    "CXD_GRAPHQL_MAX_SUBSCRIPTIONS": 100,  # running subscriptions per websocket
}
SUBPROTOCOL = "graphql-transport-ws"


# --- scalars ----------------------------------------------------------------------------


class DateTime(graphene.DateTime):
    """An ISO 8601 timestamp."""

    @staticmethod
    def serialize(dt):
        return dt if isinstance(dt, str) else graphene.DateTime.serialize(dt)


class Date(graphene.Date):
    """An ISO 8601 date."""

    @staticmethod
    def serialize(d):
        return d if isinstance(d, str) else graphene.Date.serialize(d)


class JSON(graphene.Scalar):
    """Any JSON value, as it is."""

    @staticmethod
    def serialize(value):
        return json.loads(json.dumps(value, default=str))

    @staticmethod
    def parse_value(value):
        return value

    @staticmethod
    def parse_literal(node, _variables=None):
        from graphql import value_from_ast_untyped

        return value_from_ast_untyped(node, _variables)


# SQL type -> GraphQL scalar, for saved-query outputs and parameters
OUTPUT_TYPES = {
    "text": graphene.String, "varchar": graphene.String, "uuid": graphene.String,
    "integer": graphene.Int, "int": graphene.Int, "smallint": graphene.Int,
    "bigint": graphene.BigInt,
    "double precision": graphene.Float, "float": graphene.Float, "real": graphene.Float,
    "numeric": graphene.Float,
    "boolean": graphene.Boolean,
    "timestamptz": DateTime, "timestamp": DateTime, "date": Date,
    "jsonb": JSON, "json": JSON,
}  # fmt: skip


# --- fixed types ------------------------------------------------------------------------


class Column(graphene.ObjectType):
    """A typed column."""

    name = graphene.String(required=True)
    type = graphene.String(required=True)


class Run(graphene.ObjectType):
    """One fetch/ingest run of a source."""

    id = graphene.BigInt(required=True)
    dataset = graphene.String(required=True)
    mode = graphene.String()
    status = graphene.String(
        required=True, description="queued, fetching, ingesting, succeeded, failed"
    )
    queued_at = DateTime()
    started_at = DateTime()
    finished_at = DateTime()
    rows_fetched = graphene.BigInt()
    rows_loaded = graphene.BigInt()
    rows_quarantined = graphene.BigInt()
    error = graphene.String()
    error_step = graphene.String()


class Dataset(graphene.ObjectType):
    """A dataset: schema, kind, size, watermarks, speed backlog and last run."""

    name = graphene.String(required=True)
    kind = graphene.String(required=True)
    columns = graphene.List(graphene.NonNull(Column), required=True)
    key = graphene.List(graphene.NonNull(graphene.String), required=True)
    time_column = graphene.String()
    rows_estimate = graphene.BigInt()
    batch_watermark = graphene.String(description="highest stream id loaded into Postgres")
    refreshed_at = DateTime()
    speed_high_water = graphene.String()
    speed_backlog = graphene.Int()
    last_run = graphene.Field(Run)


class Source(graphene.ObjectType):
    """A declared source (secrets by name only)."""

    name = graphene.String(required=True)
    type = graphene.String(required=True)
    kind = graphene.String(required=True)
    options = graphene.Field(JSON)
    columns = graphene.List(graphene.NonNull(Column), required=True)
    key = graphene.List(graphene.NonNull(graphene.String))
    time_column = graphene.String()
    schedule = graphene.Field(JSON)
    checks = graphene.Field(JSON)
    secrets = graphene.List(graphene.NonNull(graphene.String))
    description = graphene.String()


class Param(graphene.ObjectType):
    """A declared parameter of a saved query."""

    name = graphene.String(required=True)
    type = graphene.String(required=True)
    default = graphene.Field(JSON)


class SavedQuery(graphene.ObjectType):
    """An analyst's saved, parameterised SQL."""

    name = graphene.String(required=True)
    sql = graphene.String(required=True)
    params = graphene.List(graphene.NonNull(Param), required=True)
    outputs = graphene.List(graphene.NonNull(Column), required=True)
    refresh = graphene.String()


class Freshness(graphene.ObjectType):
    """How fresh an answer is (batch watermark, speed high-water mark, plan)."""

    plan = graphene.String()
    batch_watermark = graphene.String()
    speed_high_water = graphene.String()
    stale = graphene.Boolean()
    datasets = graphene.Field(JSON)


class SpeedEvent(graphene.ObjectType):
    """One live event of the speed layer."""

    id = graphene.String(required=True)
    data = graphene.Field(JSON, required=True)


class DatasetChange(graphene.ObjectType):
    """A change of a dataset: new live events since the previous push, and its marks."""

    dataset = graphene.String(required=True)
    batch_watermark = graphene.String()
    speed_high_water = graphene.String()
    speed_backlog = graphene.Int()
    events = graphene.List(graphene.NonNull(SpeedEvent), required=True)


class RunStarted(graphene.ObjectType):
    """The answer to trigger_run."""

    run_id = graphene.BigInt(required=True)


class ParamInput(graphene.InputObjectType):
    name = graphene.String(required=True)
    type = graphene.String(default_value="text")
    default = graphene.Field(JSON)


class ColumnInput(graphene.InputObjectType):
    name = graphene.String(required=True)
    type = graphene.String(default_value="text")


# --- resolvers --------------------------------------------------------------------------


def ctx_stores(info):
    """The stores the request or subscription works with."""
    return info.context["stores"]


def ensure_role(info, role: str) -> None:
    """Raise Forbidden unless the caller's token grants ``role``."""
    have = info.context["role"]
    if role not in IMPLIES.get(have, set()):
        raise Forbidden(f"this needs the {role!r} role; the token has {have!r}")


def dataset_object(name: str) -> dict[str, Any]:
    """The Dataset object of ``name`` (REST's dataset info, with flat marks)."""
    info = dataset_info(name)
    mark = info.pop("watermark")
    return {
        **info,
        "batch_watermark": mark.get("stream_id"),
        "refreshed_at": mark.get("refreshed_at"),
    }


def resolve_datasets(root, info):
    return [dataset_object(s.name) for s in list_sources(ctx_stores(info).db)]


def resolve_dataset(root, info, name):
    return dataset_object(name)


def resolve_runs(root, info, dataset=None, limit=100):
    return runs.list_runs(ctx_stores(info).db, dataset, limit=max(1, min(limit, 1000)))


def resolve_run(root, info, id):
    return runs.get_run(ctx_stores(info).db, int(id))


def resolve_sources(root, info):
    return [s.public() for s in list_sources(ctx_stores(info).db)]


def resolve_source(root, info, name):
    return get_source(ctx_stores(info).db, name).public()


def resolve_saved_queries(root, info):
    from query_router.saved import list_queries

    return list_queries(ctx_stores(info))


def _plain(value: Any) -> Any:
    """A GraphQL argument value as the router takes it (timestamps as ISO text)."""
    return value.isoformat() if isinstance(value, datetime | date) else value


def saved_query_resolver(name: str):
    """The resolver of the field of saved query ``name``: runs it with the field's arguments."""

    def resolve(root, info, **args):
        stores = ctx_stores(info)
        result = run_saved(stores, name, {k: _plain(v) for k, v in args.items()})
        track = info.context.get("track")
        if track is not None:  # a subscription: remember what to listen to
            track["datasets"].update(result["freshness"].get("datasets") or {})
            from query_router.saved import get_query

            refresh = get_query(stores, name).get("refresh")
            if refresh:
                track["intervals"].append(parse_duration(refresh))
        return result

    return resolve


def resolve_dataset_changes(root, info, dataset):
    """New live events since this subscription's previous push, and the dataset's marks."""
    stores = ctx_stores(info)
    get_source(stores.db, dataset)
    track = info.context.get("track") or {"datasets": set(), "cursors": {}}
    track["datasets"].add(dataset)
    hw = high_water(stores.redis, dataset)
    after = track["cursors"].get(dataset)
    events = [] if after is None else read_after(stores.redis, dataset, after, count=1000)
    if events:
        hw = events[-1][0]
    track["cursors"][dataset] = hw
    from batch.load import get_watermark

    return {
        "dataset": dataset,
        "batch_watermark": get_watermark(stores.db, dataset)["stream_id"],
        "speed_high_water": hw,
        "speed_backlog": backlog(stores.redis, dataset),
        "events": [{"id": i, "data": rec} for i, rec in events],
    }


def resolve_save_query(root, info, name, sql, params=None, outputs=None, refresh=None):
    from query_router.saved import save_query

    ensure_role(info, "analyst")
    body = {
        "name": name,
        "sql": sql,
        "params": [dict(p) for p in params or []],
        "outputs": [dict(o) for o in outputs or []],
        "refresh": refresh,
    }
    for p in body["params"]:
        if p.get("default") is None:
            p.pop("default", None)
    return save_query(ctx_stores(info), body)


def resolve_delete_query(root, info, name):
    ensure_role(info, "analyst")
    delete_query(ctx_stores(info), name)
    return True


def resolve_trigger_run(root, info, dataset, mode="incremental"):
    ensure_role(info, "admin")
    return {"run_id": enqueue_run(ctx_stores(info), dataset, mode)}


# --- the schema -------------------------------------------------------------------------

FIXED_FIELDS = {
    "datasets", "dataset", "runs", "run", "sources", "source", "saved_queries", "dataset_changes",
}  # fmt: skip


def _type_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or "Query"


def field_name(query_name: str) -> str:
    """The GraphQL field of a saved query: its name, or ``<name>_query`` where that is taken."""
    return f"{query_name}_query" if query_name in FIXED_FIELDS else query_name


def saved_query_type(q: dict[str, Any], taken: set[str]) -> tuple[type, dict[str, Any]]:
    """The result type (typed rows from the outputs) and the arguments (from the params)."""
    base = _type_name(q["name"])
    while base in taken:
        base += "_"
    taken.add(base)
    if q.get("outputs"):
        row_fields = {
            o["name"]: graphene.Field(OUTPUT_TYPES.get(str(o.get("type", "")).lower(), JSON))
            for o in q["outputs"]
        }
        row = type(f"{base}Row", (graphene.ObjectType,), row_fields)
    else:
        row = JSON
    result = type(
        f"{base}Result",
        (graphene.ObjectType,),
        {
            "__doc__": f"Result of saved query {q['name']}",
            "columns": graphene.List(graphene.NonNull(Column), required=True),
            "rows": graphene.List(graphene.NonNull(row), required=True),
            "freshness": graphene.Field(Freshness, required=True),
            "truncated": graphene.Boolean(),
        },
    )
    args = {}
    for p in q.get("params") or []:
        scalar = OUTPUT_TYPES.get(p["type"], graphene.String)
        if p["type"] in ("integer", "bigint"):
            scalar = graphene.BigInt
        args[p["name"]] = graphene.Argument(scalar, required="default" not in p)
    return result, args


def saved_query_field(q: dict[str, Any], result: type, args: dict[str, Any]) -> graphene.Field:
    """The field of saved query ``q``: its SQL as the description."""
    return graphene.Field(
        result,
        args=args,
        resolver=saved_query_resolver(q["name"]),
        description=(q["sql"] if len(q["sql"]) < 500 else q["sql"][:500] + "..."),
    )


def build_schema(queries: list[dict[str, Any]]) -> graphene.Schema:
    """The schema for the current saved queries."""
    taken: set[str] = set()
    query_fields = {
        "datasets": graphene.List(
            graphene.NonNull(Dataset), required=True, resolver=resolve_datasets
        ),
        "dataset": graphene.Field(
            Dataset, name=graphene.String(required=True), resolver=resolve_dataset
        ),
        "runs": graphene.List(
            graphene.NonNull(Run),
            required=True,
            dataset=graphene.String(),
            limit=graphene.Int(default_value=100),
            resolver=resolve_runs,
        ),
        "run": graphene.Field(Run, id=graphene.BigInt(required=True), resolver=resolve_run),
        "sources": graphene.List(graphene.NonNull(Source), required=True, resolver=resolve_sources),
        "source": graphene.Field(
            Source, name=graphene.String(required=True), resolver=resolve_source
        ),
        "saved_queries": graphene.List(
            graphene.NonNull(SavedQuery), required=True, resolver=resolve_saved_queries
        ),
    }
    sub_fields = {
        "dataset_changes": graphene.Field(
            DatasetChange,
            dataset=graphene.String(required=True),
            resolver=resolve_dataset_changes,
            description="Pushed when the dataset changes (live events or a batch load).",
        )
    }
    for q in queries:
        result, args = saved_query_type(q, taken)
        query_fields[field_name(q["name"])] = saved_query_field(q, result, args)
        sub_fields[field_name(q["name"])] = saved_query_field(q, result, args)
    mutation_fields = {
        "save_query": graphene.Field(
            SavedQuery,
            name=graphene.String(required=True),
            sql=graphene.String(required=True),
            params=graphene.List(graphene.NonNull(ParamInput)),
            outputs=graphene.List(graphene.NonNull(ColumnInput)),
            refresh=graphene.String(),
            resolver=resolve_save_query,
        ),
        "delete_query": graphene.Boolean(
            name=graphene.String(required=True), resolver=resolve_delete_query
        ),
        "trigger_run": graphene.Field(
            RunStarted,
            dataset=graphene.String(required=True),
            mode=graphene.String(default_value="incremental"),
            resolver=resolve_trigger_run,
        ),
    }
    return graphene.Schema(
        query=type("Query", (graphene.ObjectType,), query_fields),
        mutation=type("Mutation", (graphene.ObjectType,), mutation_fields),
        subscription=type("Subscription", (graphene.ObjectType,), sub_fields),
        auto_camelcase=False,
    )


class SchemaCache:
    """The schema of the current saved queries, rebuilt when any of them changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        self._schema: graphene.Schema | None = None

    def get(self, stores) -> graphene.Schema:
        """The current schema (one cheap query decides whether to rebuild it)."""
        row = stores.db.fetchone(
            "SELECT md5(coalesce(string_agg(name || ':' || updated_at::text, ',' ORDER BY name), ''))"
            " AS f FROM cxd.saved_queries"
        )
        with self._lock:
            if row["f"] != self._fingerprint or self._schema is None:
                from query_router.saved import list_queries

                self._schema = build_schema(list_queries(stores))
                self._fingerprint = row["f"]
            return self._schema


# --- limits -----------------------------------------------------------------------------


def limit(name: str) -> int:
    """A GraphQL limit from the app config, or its default."""
    return int(current_app.config.get(name, LIMITS[name]))


def check_limits(document: DocumentNode, max_depth: int, max_aliases: int) -> list[GraphQLError]:
    """Depth and alias counts of every operation, fragments counted each time they are spread.

    Each fragment is measured once (a fragment spread twice in each of 30 nested fragments
    costs 30 measurements, not 2**30), and nothing is walked deeper than the depth limit.
    """
    fragments = {d.name.value: d for d in document.definitions if d.kind == "fragment_definition"}
    measured: dict[str, tuple[int, int]] = {}
    measuring: set[str] = set()
    errors: list[GraphQLError] = []

    def measure(selection_set: SelectionSetNode, level: int) -> tuple[int, int]:
        """(selection-set levels from here down, aliases) of ``selection_set`` at ``level``."""
        deepest, aliases = 1, 0
        if level > max_depth:  # already too deep: the caller rejects, no need to look further
            return deepest, aliases
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                aliases += 1 if sel.alias else 0
                if sel.selection_set is None:
                    continue
                d, a = measure(sel.selection_set, level + 1)
                d += 1
            elif isinstance(sel, InlineFragmentNode):
                d, a = measure(sel.selection_set, level)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                if name not in fragments or name in measuring:  # validation reports these
                    continue
                if name not in measured:
                    measuring.add(name)
                    measured[name] = measure(fragments[name].selection_set, level)
                    measuring.discard(name)
                d, a = measured[name]
            else:
                continue
            deepest, aliases = max(deepest, d), aliases + a
        return deepest, aliases

    for op in document.definitions:
        if not isinstance(op, OperationDefinitionNode):
            continue
        try:
            depth, aliases = measure(op.selection_set, 1)
        except RecursionError:  # a chain of fragments longer than Python's stack
            depth, aliases = max_depth + 1, 0
        label = f"operation {op.name.value!r}" if op.name else "the operation"
        if depth > max_depth:
            errors.append(
                GraphQLError(
                    f"{label} is nested more than {max_depth} levels deep (the limit)",
                    extensions={"code": "depth_limit", "limit": max_depth},
                )
            )
        if aliases > max_aliases:
            errors.append(
                GraphQLError(
                    f"{label} uses more than {max_aliases} aliases (the limit)",
                    extensions={"code": "alias_limit", "limit": max_aliases},
                )
            )
    return errors


def prepare(schema: graphene.Schema, source: Any) -> tuple[DocumentNode | None, list[GraphQLError]]:
    """Parse and check a document against every limit and the schema; no resolver runs."""
    if not isinstance(source, str) or not source.strip():
        return None, [
            GraphQLError("send a GraphQL document in 'query'", extensions={"code": "bad_request"})
        ]
    max_bytes = limit("CXD_GRAPHQL_MAX_BYTES")
    if len(source.encode()) > max_bytes:
        return None, [
            GraphQLError(
                f"the document is {len(source.encode())} bytes; the limit is {max_bytes}",
                extensions={"code": "size_limit", "limit": max_bytes},
            )
        ]
    max_tokens = limit("CXD_GRAPHQL_MAX_TOKENS")
    try:
        document = parse(source, max_tokens=max_tokens)
    except GraphQLSyntaxError as exc:
        code = "token_limit" if "tokens. Parsing aborted" in exc.message else "syntax_error"
        if code == "token_limit":
            exc.extensions = {"code": code, "limit": max_tokens}
        else:
            exc.extensions = {"code": code}
        return None, [exc]
    errors = check_limits(
        document, limit("CXD_GRAPHQL_MAX_DEPTH"), limit("CXD_GRAPHQL_MAX_ALIASES")
    )
    if errors:
        return None, errors
    errors = validate(schema.graphql_schema, document)
    for err in errors:
        err.extensions = {"code": "validation_failed", **(err.extensions or {})}
    return (None, errors) if errors else (document, [])


def format_error(err: GraphQLError) -> dict[str, Any]:
    """A GraphQL error as JSON; cxd errors keep their code and details, others are hidden."""
    original = err.original_error
    if original is not None and not isinstance(original, GraphQLError):
        if isinstance(original, CxdError):
            err.extensions = {"code": original.code, "details": original.details}
            err.message = original.message
        else:
            ref = uuid.uuid4().hex[:12]
            log.error("GraphQL resolver failed (reference %s)", ref, exc_info=original)
            err.message = f"internal error (reference {ref})"
            err.extensions = {"code": "internal"}
    return err.formatted


def run_document(
    schema: graphene.Schema,
    document: DocumentNode,
    context: dict[str, Any],
    variables: dict[str, Any] | None,
    operation_name: str | None,
) -> dict[str, Any]:
    """Execute a checked document and return the response body."""
    result = execute(
        schema.graphql_schema,
        document,
        context_value=context,
        variable_values=variables,
        operation_name=operation_name,
    )
    assert isinstance(result, ExecutionResult)
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [format_error(e) for e in result.errors]
    return body


# --- HTTP -------------------------------------------------------------------------------

GRAPHIQL = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>cxd GraphiQL</title>
  <link rel="stylesheet" href="{{ static }}/graphiql.min.css">
  <style>body { margin: 0; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL...</div>
  <script src="{{ static }}/react.production.min.js"></script>
  <script src="{{ static }}/react-dom.production.min.js"></script>
  <script src="{{ static }}/graphiql.min.js"></script>
  <script>
    const token = new URLSearchParams(window.location.search).get("token");
    const wsScheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const fetcher = GraphiQL.createFetcher({
      url: {{ endpoint|tojson }},
      headers: token ? { Authorization: "Bearer " + token } : {},
      // subscriptions: graphql-transport-ws on the same path, token in connection_init
      subscriptionUrl: wsScheme + "//" + window.location.host + {{ endpoint|tojson }},
      wsConnectionParams: token ? { token: token } : {},
    });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
    );
  </script>
</body>
</html>
"""


def wants_html() -> bool:
    """A browser asking for a page rather than a GraphQL response."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.method == "GET" and best == "text/html" and "query" not in request.args


def request_operation() -> tuple[Any, dict | None, str | None]:
    """(query, variables, operationName) from a GET query string or a POST body."""
    if request.method == "GET":
        variables = request.args.get("variables")
        try:
            variables = json.loads(variables) if variables else None
        except ValueError:
            variables = "not JSON"
        return request.args.get("query"), variables, request.args.get("operationName")
    if request.mimetype == "application/graphql":
        return request.get_data(as_text=True), None, None
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return None, None, None
    return data.get("query"), data.get("variables"), data.get("operationName")


def graphql_response(body: dict[str, Any], status: int = 200):
    response = jsonify(body)
    response.status_code = status
    return response


@graphql_api.route("/graphql", methods=["GET", "POST"])
@needs("read")
def graphql_http():
    """GraphQL over HTTP (POST JSON, or GET with ?query=); GraphiQL for browsers."""
    from flask import g, url_for

    if wants_html():
        return render_template_string(
            GRAPHIQL,
            static=url_for("graphql.static", filename="").rstrip("/"),
            endpoint=url_for("graphql.graphql_http"),
        )
    stores = current_app.extensions["cxd.stores"]
    schema = current_app.extensions["cxd.graphql"].get(stores)
    source, variables, operation_name = request_operation()
    if variables is not None and not isinstance(variables, dict):
        return graphql_response(
            {
                "errors": [
                    {
                        "message": "variables must be a JSON object",
                        "extensions": {"code": "bad_request"},
                    }
                ]
            },
            400,
        )
    document, errors = prepare(schema, source)
    if errors:
        return graphql_response({"errors": [e.formatted for e in errors]}, 400)
    op = get_operation_ast(document, operation_name)
    if op is None:
        return graphql_response(
            {
                "errors": [
                    {
                        "message": "name the operation to run in operationName",
                        "extensions": {"code": "bad_request"},
                    }
                ]
            },
            400,
        )
    if op.operation == OperationType.SUBSCRIPTION:
        return graphql_response(
            {
                "errors": [
                    {
                        "message": f"subscriptions run over websockets ({SUBPROTOCOL}) on this path",
                        "extensions": {"code": "bad_request"},
                    }
                ]
            },
            400,
        )
    if op.operation == OperationType.MUTATION and request.method != "POST":
        return graphql_response(
            {"errors": [{"message": "mutations need POST", "extensions": {"code": "bad_request"}}]},
            405,
        )
    context = {"stores": stores, "role": g.role}
    return graphql_response(run_document(schema, document, context, variables, operation_name))


# --- subscriptions over websockets (graphql-transport-ws) --------------------------------


class Closed(Exception):
    """Close the socket with a graphql-transport-ws close code."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Subscription(threading.Thread):
    """One running subscription: evaluate, push if changed, wait for a change or the interval."""

    POLL = 1.0  # seconds between checks that the client still wants it

    def __init__(self, session: GraphQLSession, sub_id: str, document, variables, operation_name):
        super().__init__(name=f"graphql-sub-{sub_id}", daemon=True)
        self.session = session
        self.sub_id = sub_id
        self.document = document
        self.variables = variables
        self.operation_name = operation_name
        self.stopped = threading.Event()
        self.track: dict[str, Any] = {"datasets": set(), "intervals": [], "cursors": {}}

    def evaluate(self) -> dict[str, Any]:
        self.track["intervals"] = []
        context = {"stores": self.session.stores, "role": self.session.role, "track": self.track}
        return run_document(
            self.session.schema, self.document, context, self.variables, self.operation_name
        )

    def run(self) -> None:
        with self.session.app.app_context():
            pubsub = self.session.stores.redis.pubsub(ignore_subscribe_messages=True)
            try:
                self.loop(pubsub)
            except Closed:
                pass
            except Exception:  # the socket went away, or the stores did: end this subscription
                log.debug("subscription %s ended", self.sub_id, exc_info=True)
            finally:
                pubsub.close()

    def loop(self, pubsub) -> None:
        last = self.evaluate()
        self.session.send({"id": self.sub_id, "type": "next", "payload": last})
        if last.get("data") is None:  # failed outright: nothing to follow
            self.session.send({"id": self.sub_id, "type": "complete"})
            return
        channels: set[str] = set()
        while not self.stopped.is_set():
            wanted = {notify_channel(d) for d in self.track["datasets"]}
            if wanted - channels:
                pubsub.subscribe(*(wanted - channels))
                channels |= wanted
                changed = True  # a change may have come before we listened: look again
            else:
                changed = self.wait(pubsub)
            if self.stopped.is_set():
                return
            if changed:
                body = self.evaluate()
                if body != last:
                    self.session.send({"id": self.sub_id, "type": "next", "payload": body})
                    last = body

    def wait(self, pubsub) -> bool:
        """Block until a change notification or the refresh interval; True if due."""
        interval = min(self.track["intervals"]) if self.track["intervals"] else None
        waited = 0.0
        while not self.stopped.is_set():
            step = self.POLL if interval is None else min(self.POLL, max(interval - waited, 0.01))
            message = pubsub.get_message(timeout=step)
            if message is not None:
                while pubsub.get_message(timeout=0) is not None:  # coalesce a burst
                    pass
                return True
            waited += step
            if interval is not None and waited >= interval:
                return True
        return False


class GraphQLSession:
    """One websocket speaking graphql-transport-ws."""

    INIT_TIMEOUT = 10.0

    def __init__(self, ws, app: Flask, stores, token: str | None):
        self.ws = ws
        self.app = app
        self.stores = stores
        self.token = token
        self.role: str | None = None
        self.schema = None
        self.subs: dict[str, Subscription] = {}
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, default=str)
        with self._send_lock:
            self.ws.send(text)

    def serve(self) -> None:
        try:
            self._serve()
        except Closed as exc:
            self.ws.close(reason=exc.code, message=exc.reason)
        except ConnectionClosed:
            pass
        except Exception:  # after the upgrade an HTTP 500 cannot be sent: close instead
            ref = uuid.uuid4().hex[:12]
            log.exception("GraphQL websocket failed (reference %s)", ref)
            self.ws.close(reason=1011, message=f"internal error (reference {ref})")
        finally:
            for sub in self.subs.values():
                sub.stopped.set()

    def _serve(self) -> None:
        raw = self.ws.receive(timeout=self.INIT_TIMEOUT)
        if raw is None:
            raise Closed(4408, "Connection initialisation timeout")
        message = self.decode(raw)
        if message.get("type") != "connection_init":
            raise Closed(4401, "Unauthorized")
        self.authenticate(message.get("payload"))
        self.send({"type": "connection_ack"})
        while True:
            raw = self.ws.receive()
            if raw is None:
                return
            message = self.decode(raw)
            kind = message.get("type")
            if kind == "ping":
                self.send({"type": "pong"})
            elif kind == "pong":
                continue
            elif kind == "connection_init":
                raise Closed(4429, "Too many initialisation requests")
            elif kind == "subscribe":
                self.subscribe(message)
            elif kind == "complete":
                sub = self.subs.pop(str(message.get("id")), None)
                if sub is not None:
                    sub.stopped.set()
            else:
                raise Closed(4400, f"Unknown message type {kind!r}")

    @staticmethod
    def decode(raw: Any) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except ValueError:
            raise Closed(4400, "Invalid message: not JSON") from None
        if not isinstance(message, dict):
            raise Closed(4400, "Invalid message: not an object")
        return message

    def authenticate(self, payload: Any) -> None:
        token = self.token
        if isinstance(payload, dict) and not token:
            header = payload.get("Authorization") or payload.get("authorization")
            token = token_from_header(header) if header else payload.get("token")
        try:
            role = role_of(self.stores.db, token)
        except CxdError:
            raise Closed(4403, "Forbidden: a valid token is needed") from None
        if "read" not in IMPLIES[role]:
            raise Closed(4403, "Forbidden: the token does not grant the read role")
        self.role = role

    def subscribe(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(sub_id, str) or not sub_id or not isinstance(payload, dict):
            raise Closed(4400, "Invalid message: subscribe needs an id and a payload")
        if sub_id in self.subs and self.subs[sub_id].is_alive():
            raise Closed(4409, f"Subscriber for {sub_id} already exists")
        self.subs = {k: sub for k, sub in self.subs.items() if sub.is_alive()}
        cap = int(
            self.app.config.get(
                "CXD_GRAPHQL_MAX_SUBSCRIPTIONS", LIMITS["CXD_GRAPHQL_MAX_SUBSCRIPTIONS"]
            )
        )
        if len(self.subs) >= cap:
            error = GraphQLError(
                f"this connection already runs {cap} subscriptions (the limit); complete one first",
                extensions={"code": "subscription_limit", "limit": cap},
            )
            self.send({"id": sub_id, "type": "error", "payload": [error.formatted]})
            return
        self.schema = self.app.extensions["cxd.graphql"].get(self.stores)
        with self.app.app_context():  # limits read the app config
            document, errors = prepare(self.schema, payload.get("query"))
        variables = payload.get("variables")
        if not errors and variables is not None and not isinstance(variables, dict):
            errors = [GraphQLError("variables must be a JSON object")]
        if errors:
            self.send({"id": sub_id, "type": "error", "payload": [e.formatted for e in errors]})
            return
        operation_name = payload.get("operationName")
        op = get_operation_ast(document, operation_name)
        if op is not None and op.operation != OperationType.SUBSCRIPTION:
            # a query or mutation over the socket: one result, then complete
            context = {"stores": self.stores, "role": self.role}
            with self.app.app_context():
                body = run_document(self.schema, document, context, variables, operation_name)
            self.send({"id": sub_id, "type": "next", "payload": body})
            self.send({"id": sub_id, "type": "complete"})
            return
        sub = Subscription(self, sub_id, document, variables, operation_name)
        self.subs[sub_id] = sub
        sub.start()


@sock.route("/graphql", bp=graphql_api)
def graphql_ws(ws):
    """Subscriptions (and queries) over the graphql-transport-ws protocol."""
    from serving.auth import request_token

    app = current_app._get_current_object()
    GraphQLSession(ws, app, app.extensions["cxd.stores"], request_token()).serve()


def offer_subprotocol(app: Flask) -> None:
    """Add graphql-transport-ws to the subprotocols flask-sock offers (its options live in
    the app config and are shared by every websocket route, so merge, never replace)."""
    options = app.config.get("SOCK_SERVER_OPTIONS")
    if options is None:
        options = app.config["SOCK_SERVER_OPTIONS"] = {}
    if SUBPROTOCOL not in options.get("subprotocols", []):
        options["subprotocols"] = [*options.get("subprotocols", []), SUBPROTOCOL]


@graphql_api.before_app_request
def keep_subprotocol_offered():
    # another blueprint may set SOCK_SERVER_OPTIONS after init_app: check before each upgrade
    if request.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        offer_subprotocol(current_app)


def init_app(app: Flask) -> None:
    """Register ``/graphql`` (HTTP and websocket) on ``app``."""
    app.extensions["cxd.graphql"] = SchemaCache()
    for name, default in LIMITS.items():
        app.config.setdefault(name, default)
    offer_subprotocol(app)
    app.register_blueprint(graphql_api)

"""Webhook JSON: records POSTed to ``/hooks/<dataset>`` on cxd-ingest go to the speed layer.

The body is one JSON object, a JSON array of objects, or NDJSON. Every record is checked
against the dataset's columns; if any is bad the answer is 400 naming each bad record
(index, field, reason) and nothing of the request is stored. 202 is sent only once
every record is in Redis.

Options (all optional)::

    options:
      event_id: event_id        # a column holding each event's id: repeats are stored once
      max_body: 16MiB           # larger bodies get 413 before they are read
      dedup_ttl: 24h            # how long event ids and Idempotency-Keys are remembered
    secrets:
      token: s3cret             # callers send Authorization: Bearer s3cret
      hmac_secret: k3y          # callers send X-Cxd-Signature: sha256=<hex HMAC of the body>

Without ``token`` or ``hmac_secret`` the caller needs a cxd bearer token with the
``ingest`` role. A request with an ``Idempotency-Key`` header is stored once however
often it is repeated (within ``dedup_ttl``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
from http import HTTPStatus
from typing import Any

import orjson
import redis
from flask import Blueprint, current_app, jsonify, request
from werkzeug.datastructures import EnvironHeaders

from cxd.auth import require_recent, token_from_header
from cxd.catalog import SourceSpec, get_source_recent, parse_duration
from cxd.errors import BadInput, Forbidden, TransientError, Unauthorized
from cxd.web import error_response
from plugins import health
from plugins.base import SourcePlugin
from plugins.records import (
    DEDUP_TTL,
    batch_problems,
    parse_size,
    record_problems,
    store_once,
)

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
SIGNATURE_HEADER = "X-Cxd-Signature"


class WebhookSource(SourcePlugin):
    """A resident source: cxd-ingest receives its records; nothing to fetch on a schedule."""

    type = "webhook"
    resident = True

    def validate(self) -> list[str]:
        problems = []
        event_id = self.options.get("event_id")
        if event_id is not None and event_id not in self.spec.column_names:
            problems.append(f"options.event_id {event_id!r} is not a declared column")
        try:
            if parse_size(self.options.get("max_body", MAX_BODY)) < 1:
                problems.append("options.max_body must be at least 1 byte")
        except ValueError as exc:
            problems.append(f"options.max_body: {exc}")
        try:
            parse_duration(self.options.get("dedup_ttl", DEDUP_TTL))
        except ValueError as exc:
            problems.append(f"options.dedup_ttl: {exc}")
        for name in ("token", "hmac_secret"):
            if name in self.secrets and not isinstance(self.secrets[name], str):
                problems.append(f"secrets.{name} must be a string")
        return problems

    def fetch(self, cursor):
        return iter(())

    def clean(self, record: dict[str, Any]) -> dict[str, Any]:
        """Shape one received record before it is checked and stored (default: as sent).

        Override it to rename fields, convert units or add derived values; raise
        ``ValueError`` (or any error) to refuse the record: the request then gets 400 naming
        the record and nothing of it is stored.
        """
        return record

    def problems(self, record: Any) -> list[dict[str, str]]:
        """Every problem of one cleaned record as {field, reason} (empty when it is fine).

        The default checks the record against the declared columns; an override can add
        rules of its own (``record_problems(self.spec, record) + [...]``).
        """
        return record_problems(self.spec, record)

    def clean_all(self, records: list[Any]) -> list[Any]:
        """:meth:`clean` applied to every object of a request (400 naming any that fails)."""
        if type(self).clean is WebhookSource.clean:
            return records  # nothing to do: skip a call per record on the hot path
        out, bad = [], []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                out.append(record)  # the check names it
                continue
            try:
                out.append(self.clean(record))
            except Exception as exc:  # an analyst's clean() may fail in any way
                bad.append(
                    {"index": i, "field": "", "reason": f"clean: {type(exc).__name__}: {exc}"}
                )
                out.append(record)
        if bad:
            raise BadInput(
                f"{len(bad)} of {len(records)} record(s) could not be cleaned; nothing was stored",
                details={"records": bad},
            )
        return out

    @property
    def max_body(self) -> int:
        """Largest body accepted, in bytes."""
        return parse_size(self.options.get("max_body", MAX_BODY))

    @property
    def dedup_ttl(self) -> float:
        """Seconds an event id or Idempotency-Key is remembered."""
        return parse_duration(self.options.get("dedup_ttl", DEDUP_TTL))

    def check_caller(self, db, headers, body: bytes | None) -> None:
        """Raise Unauthorized unless the request carries this source's credential.

        With ``body`` None only the header checks run (before the body is read).
        """
        bearer = token_from_header(headers.get("Authorization"))
        token, key = self.secrets.get("token"), self.secrets.get("hmac_secret")
        if not token and not key:
            require_recent(db, bearer, "ingest")
            return
        if token and not hmac.compare_digest((bearer or "").encode(), token.encode()):
            raise Unauthorized(f"source {self.spec.name!r} needs its token (Authorization: Bearer)")
        if key:
            sent = headers.get(SIGNATURE_HEADER, "")
            if not sent.startswith("sha256="):
                raise Unauthorized(
                    f"source {self.spec.name!r} needs an {SIGNATURE_HEADER}: sha256=<hex> header"
                )
            if body is not None:
                want = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(sent[7:].strip().lower().encode(), want.encode()):
                    raise Unauthorized(f"the {SIGNATURE_HEADER} does not match the body")


_NOT_JSON = object()


def parse_body(raw: bytes, content_type: str) -> list[Any]:
    """The records in a request body: an object, an array, or NDJSON."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise BadInput(f"the body is not UTF-8 text (byte {exc.start})") from None
    if not text:
        raise BadInput("the request body is empty; send a JSON object, array or NDJSON")
    if "ndjson" not in content_type and "jsonl" not in content_type:
        doc: Any = _NOT_JSON
        try:
            doc = orjson.loads(text)  # fast; json below takes what orjson refuses (NaN, bigints)
        except orjson.JSONDecodeError:
            try:
                doc = json.loads(text)
            except ValueError as exc:
                if sum(1 for line in text.splitlines() if line.strip()) < 2:
                    raise BadInput(f"the body is not JSON: {exc}") from None
        if doc is not _NOT_JSON:
            return doc if isinstance(doc, list) else [doc]
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise BadInput(f"NDJSON line {n} is not JSON: {exc}", details={"line": n}) from None
    return records


def read_body(limit: int, content_length: int | None, stream) -> bytes:
    """The request body, refusing with 413 anything over ``limit`` bytes before reading it."""
    too_big = BadInput(f"the body is over the limit of {limit} bytes", status=413)
    if (content_length or 0) > limit:
        raise too_big
    if content_length is not None:
        body = stream.read(content_length)
        if len(body) == content_length:
            return body
        body = bytearray(body)
    else:
        body = bytearray()  # chunked bodies carry no Content-Length: count while reading
    while len(body) <= limit:
        chunk = stream.read(min(limit + 1 - len(body), 1 << 20))
        if not chunk:
            return bytes(body)
        body += chunk
    raise too_big


_plugins: dict[str, tuple[SourceSpec, WebhookSource]] = {}


def receiver_for(stores, dataset: str) -> WebhookSource:
    """The plugin receiving ``dataset``'s webhooks (the source's own class when it names a
    ``plugin:``), built once per declaration."""
    spec = get_source_recent(stores.db, dataset)
    if spec.type not in ("webhook", "mqtt"):
        raise BadInput(f"dataset {dataset!r} is a {spec.type} source and does not take webhooks")
    hit = _plugins.get(dataset)
    if hit is not None and (hit[0] is spec or hit[0] == spec):
        return hit[1]
    plugin = WebhookSource(spec)
    if spec.type == "webhook" and spec.plugin:
        from plugins.registry import plugin_for

        custom = plugin_for(spec, stores.settings.plugin_dir)
        if not isinstance(custom, WebhookSource):
            raise BadInput(
                f"source {dataset!r}: plugin {spec.plugin!r} is a {type(custom).__name__}, "
                "not a WebhookSource, and cannot receive webhooks"
            )
        plugin = custom
    _plugins[dataset] = (spec, plugin)
    return plugin


def receive_request(
    stores, dataset: str, headers, content_length: int | None, stream, content_type: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Handle one ``POST /hooks/<dataset>``: (status, JSON body, extra headers).

    Raises CxdError for a refused request (the caller turns it into the error body).
    """
    source = receiver_for(stores, dataset)
    spec = source.spec
    event_id = source.options.get("event_id")
    try:
        source.check_caller(stores.db, headers, None)
        raw = read_body(source.max_body, content_length, stream)
        source.check_caller(stores.db, headers, raw)
        records = source.clean_all(parse_body(raw, content_type or ""))
        bad = batch_problems(spec, records, event_id, check=source.problems)
        if bad:
            raise BadInput(
                f"{len({b['index'] for b in bad})} of {len(records)} record(s) are invalid;"
                " nothing was stored",
                details={"records": bad},
            )
    except (BadInput, Unauthorized, Forbidden) as exc:
        health.count_error(stores.redis, dataset, f"{exc.status}: {exc.message}")
        raise
    try:
        stored = store_once(
            stores.redis,
            spec,
            records,
            event_id=event_id,
            request_id=headers.get("Idempotency-Key") or None,
            ttl=source.dedup_ttl,
            also=lambda pipe: health.count_messages(pipe, dataset, len(records)),
        )
    except (TransientError, redis.RedisError) as exc:
        answered = isinstance(exc, TransientError)  # refused by Redis: the count rode along
        if not answered:
            exc = TransientError(f"the speed layer is not reachable now: {exc}")
        return retry_later(stores, exc, dataset, len(records) if answered else 0)
    if stored.duplicates:
        with contextlib.suppress(redis.RedisError):
            health.count_messages(stores.redis, dataset, 0, stored.duplicates)
    body = {"accepted": len(records), "duplicates": stored.duplicates, "ids": stored.ids}
    return 202, body, {"Idempotent-Replayed": "true"} if stored.replayed else {}


def retry_later(stores, exc: TransientError, dataset: str, counted: int = 0):
    """The error as (status, JSON body, Retry-After header): backpressure, Redis down."""
    details = exc.details if isinstance(exc.details, dict) else {}
    retry_after = getattr(exc, "retry_after", None) or details.get("retry_after") or 1
    with contextlib.suppress(redis.RedisError):
        if counted:  # counted as received in the same round trip as the refused append
            health.count_messages(stores.redis, dataset, -counted)
        health.count_error(stores.redis, dataset, exc.message)
    return exc.status, exc.to_dict(), {"Retry-After": str(max(1, math.ceil(float(retry_after))))}


hooks = Blueprint("hooks", __name__)


@hooks.post("/hooks/<dataset>")
def receive(dataset: str):
    """Accept records for ``dataset`` once they are in the speed layer."""
    status, body, headers = receive_request(
        current_app.extensions["cxd.stores"],
        dataset,
        request.headers,
        request.content_length,
        request.stream,
        request.content_type or "",
    )
    return jsonify(body), status, headers


class HookFastPath:
    """WSGI middleware answering ``POST /hooks/<dataset>`` without Flask's request machinery.

    A single-event webhook is on the latency-critical path (p99 < 5 ms at 1,000 requests/s
    per the speed-layer targets): building Flask's request and response objects costs about
    as much as the work itself. The middleware calls the same :func:`receive_request` as
    the Flask route and answers errors with the same JSON body; every other request goes
    to the Flask app.
    """

    def __init__(self, wsgi_app, stores):
        self.wsgi_app = wsgi_app
        self.stores = stores

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        dataset = path[7:] if path.startswith("/hooks/") else ""
        if not dataset or "/" in dataset or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        raw_length = environ.get("CONTENT_LENGTH")
        try:
            length = int(raw_length) if raw_length else None
        except ValueError:
            length = -1
        try:
            if length is not None and length < 0:
                raise BadInput(f"Content-Length {raw_length!r} is not a number of bytes")
            status, body, headers = receive_request(
                self.stores,
                dataset,
                EnvironHeaders(environ),
                length,
                environ["wsgi.input"],
                environ.get("CONTENT_TYPE", ""),
            )
        except Exception as exc:
            status, body, headers = error_response(exc)
        payload = orjson.dumps(body)
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
             *headers.items()],
        )  # fmt: skip
        return [payload]

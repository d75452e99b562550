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
import math
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request

from cxd.auth import require_recent, token_from_header
from cxd.catalog import SourceSpec, get_source_recent, parse_duration
from cxd.errors import BadInput, Forbidden, TransientError, Unauthorized
from plugins import health
from plugins.base import SourcePlugin
from plugins.records import DEDUP_TTL, Busy, batch_problems, parse_size, store_once

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


def parse_body(raw: bytes, content_type: str) -> list[Any]:
    """The records in a request body: an object, an array, or NDJSON."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise BadInput(f"the body is not UTF-8 text (byte {exc.start})") from None
    if not text:
        raise BadInput("the request body is empty; send a JSON object, array or NDJSON")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if "ndjson" not in content_type and "jsonl" not in content_type:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            if len(lines) < 2:
                raise BadInput(f"the body is not JSON: {exc}") from None
        else:
            return doc if isinstance(doc, list) else [doc]
    records = []
    for n, line in lines:
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise BadInput(f"NDJSON line {n} is not JSON: {exc}", details={"line": n}) from None
    return records


def read_body(limit: int) -> bytes:
    """The request body, refusing with 413 anything over ``limit`` bytes before reading it."""
    too_big = BadInput(f"the body is over the limit of {limit} bytes", status=413)
    if (request.content_length or 0) > limit:
        raise too_big
    body = bytearray()  # chunked bodies carry no Content-Length: count while reading
    while len(body) <= limit:
        chunk = request.stream.read(min(limit + 1 - len(body), 1 << 20))
        if not chunk:
            return bytes(body)
        body += chunk
    raise too_big


hooks = Blueprint("hooks", __name__)


def _source(dataset: str) -> tuple[SourceSpec, WebhookSource]:
    spec = get_source_recent(current_app.extensions["cxd.stores"].db, dataset)
    if spec.type not in ("webhook", "mqtt"):
        raise BadInput(f"dataset {dataset!r} is a {spec.type} source and does not take webhooks")
    return spec, WebhookSource(spec)


def retry_later(exc: TransientError | Busy, dataset: str):
    """The error as JSON with a Retry-After header (backpressure, a concurrent repeat)."""
    details = exc.details if isinstance(exc.details, dict) else {}
    retry_after = getattr(exc, "retry_after", None) or details.get("retry_after") or 1
    response = jsonify(exc.to_dict())
    response.headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
    with contextlib.suppress(redis.RedisError):
        health.count_error(current_app.extensions["cxd.stores"].redis, dataset, exc.message)
    return response, exc.status


@hooks.post("/hooks/<dataset>")
def receive(dataset: str):
    """Accept records for ``dataset`` once they are in the speed layer."""
    stores = current_app.extensions["cxd.stores"]
    spec, source = _source(dataset)
    event_id = source.options.get("event_id")
    try:
        source.check_caller(stores.db, request.headers, None)
        raw = read_body(source.max_body)
        source.check_caller(stores.db, request.headers, raw)
        records = parse_body(raw, request.content_type or "")
        bad = batch_problems(spec, records, event_id)
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
            request_id=request.headers.get("Idempotency-Key") or None,
            ttl=source.dedup_ttl,
        )
    except (TransientError, Busy) as exc:
        return retry_later(exc, dataset)
    except redis.RedisError as exc:
        return retry_later(TransientError(f"the speed layer is not reachable now: {exc}"), dataset)
    pipe = stores.redis.pipeline(transaction=False)
    health.count_messages(pipe, dataset, len(records), stored.duplicates)
    pipe.execute()
    return jsonify(
        {"accepted": len(records), "duplicates": stored.duplicates, "ids": stored.ids}
    ), 202

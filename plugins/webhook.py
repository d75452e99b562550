"""Webhook JSON: records POSTed to ``/hooks/<dataset>`` on cxd-ingest go to the speed layer.

The body is one JSON object, a JSON array of objects, or NDJSON. Every record is checked
against the dataset's columns; if any is bad the answer is 400 naming each bad record
(index, field, reason) and nothing of the request is stored. 202 is sent only once
every record is in Redis.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from cxd.auth import require, token_from_header
from cxd.catalog import get_source
from cxd.errors import BadInput
from plugins.base import SourcePlugin
from plugins.records import record_problems
from speed.stream import append

MAX_BODY = 16 * 1024 * 1024


class WebhookSource(SourcePlugin):
    """A resident source: cxd-ingest receives its records; nothing to fetch on a schedule."""

    type = "webhook"
    resident = True

    def fetch(self, cursor):
        return iter(())


def parse_body(raw: bytes, content_type: str) -> list[Any]:
    """The records in a request body: an object, an array, or NDJSON."""
    text = raw.decode("utf-8", errors="strict").strip()
    if not text:
        raise BadInput("the request body is empty; send a JSON object, array or NDJSON")
    if "ndjson" in content_type or (not text.startswith("[") and "\n" in text):
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as exc:
                    raise BadInput(
                        f"NDJSON line {n} is not JSON: {exc}", details={"line": n}
                    ) from None
        return records
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None
    return doc if isinstance(doc, list) else [doc]


hooks = Blueprint("hooks", __name__)


@hooks.post("/hooks/<dataset>")
def receive(dataset: str):
    """Accept records for ``dataset`` once they are in the speed layer."""
    stores = current_app.extensions["cxd.stores"]
    require(stores.db, token_from_header(request.headers.get("Authorization")), "ingest")
    spec = get_source(stores.db, dataset)
    if spec.type not in ("webhook", "mqtt"):
        raise BadInput(f"dataset {dataset!r} is a {spec.type} source and does not take webhooks")
    if (request.content_length or 0) > MAX_BODY:
        raise BadInput(f"the body is over {MAX_BODY} bytes", status=413)
    records = parse_body(request.get_data(), request.content_type or "")
    bad = []
    for i, record in enumerate(records):
        for problem in record_problems(spec, record):
            bad.append({"index": i, **problem})
    if bad:
        raise BadInput(
            f"{len({b['index'] for b in bad})} of {len(records)} record(s) are invalid; nothing was stored",
            details={"records": bad},
        )
    ids = append(
        stores.redis,
        dataset,
        records,
        key_columns=spec.key if spec.kind == "instantaneous" else (),
        spec=spec,
    )
    return jsonify({"accepted": len(ids), "ids": ids}), 202

"""What every cxd Flask app shares: JSON encoding of database values and one error handler
that turns every CxdError into ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from flask import Flask, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from cxd.errors import CxdError

log = logging.getLogger(__name__)


def to_json_value(value: Any) -> Any:
    """A database value as JSON: timestamps in ISO 8601, decimals as numbers."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | bytes | memoryview):
        return str(value) if not isinstance(value, bytes | memoryview) else bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with database types and ISO timestamps."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        return to_json_value(o)


def error_response(exc: Exception) -> tuple[int, dict, dict[str, str]]:
    """(status, JSON body, headers) answering ``exc``: a CxdError as itself (with
    Retry-After when it says when to come back), anything else as a logged 500."""
    if isinstance(exc, CxdError):
        retry_after = getattr(exc, "retry_after", None)  # Backpressure: when to come back
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return exc.status, exc.to_dict(), headers
    ref = uuid.uuid4().hex[:12]
    log.exception("unexpected error %s", ref)
    body = {
        "error": {
            "code": "internal",
            "message": f"internal error (reference {ref})",
            "details": None,
        }
    }
    return 500, body, {}


def install(app: Flask) -> None:
    """Bind the JSON provider and the error handlers to ``app``."""
    app.json_provider_class = JSONProvider
    app.json = JSONProvider(app)

    @app.errorhandler(CxdError)
    def cxd_error(exc: CxdError):
        status, body, headers = error_response(exc)
        return jsonify(body), status, headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        body = {
            "error": {
                "code": exc.name.lower().replace(" ", "_"),
                "message": exc.description,
                "details": None,
            }
        }
        return jsonify(body), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        status, body, headers = error_response(exc)
        return jsonify(body), status, headers

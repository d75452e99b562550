"""Base error classes shared by every layer.

Errors are split by what the caller should do about them (see STYLE.md): a
``ConfigError`` means fix the settings and start again, a ``TransientError`` may be
retried, a ``BadInput`` is the caller's request or record and names what was wrong.
Each carries an HTTP status so the serving layer can answer with it directly.
"""

from __future__ import annotations

from typing import Any


class CxdError(Exception):
    """Base class for every error cxd raises on purpose."""

    code = "cxd_error"
    status = 500

    def __init__(self, message: str, *, details: Any = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        """The JSON body every API answers with for this error."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ConfigError(CxdError):
    """A setting is missing or wrong; fix it and start again."""

    code = "config_error"
    status = 500


class BadInput(CxdError):
    """The caller sent something invalid; the message names what and where."""

    code = "bad_input"
    status = 400


class NotFound(CxdError):
    """A named thing does not exist."""

    code = "not_found"
    status = 404


class Unauthorized(CxdError):
    """No token, or a token that does not grant the role the endpoint needs."""

    code = "unauthorized"
    status = 401


class Forbidden(CxdError):
    """The token is valid but its role is not enough."""

    code = "forbidden"
    status = 403


class TransientError(CxdError):
    """Something outside cxd failed for now; retrying later may succeed."""

    code = "transient"
    status = 503

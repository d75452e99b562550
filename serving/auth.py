"""Token checks for the serving layer's routes."""

from __future__ import annotations

from functools import wraps

from flask import current_app, g, request

from cxd.auth import require, token_from_header


def request_token() -> str | None:
    """The bearer token of the current request (header, or ``?token=`` for browsers)."""
    return token_from_header(request.headers.get("Authorization")) or request.args.get("token")


def needs(role: str):
    """Decorator: the route needs a token granting ``role``."""

    def wrap(view):
        @wraps(view)
        def checked(*args, **kwargs):
            g.role = require(current_app.extensions["cxd.stores"].db, request_token(), role)
            return view(*args, **kwargs)

        return checked

    return wrap

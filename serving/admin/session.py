"""Console sessions: an admin token posted once to the login form becomes an httponly
cookie naming a server-side session in Redis; every form carries that session's CSRF token.

The session keeps only the token's SHA-256, and every request re-checks it against
``cxd.tokens``, so revoking the token ends its console sessions at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from functools import wraps

from flask import current_app, g, jsonify, redirect, request, url_for

from cxd.auth import require, token_from_header
from cxd.errors import CxdError

COOKIE = "cxd_admin"
TTL = 12 * 3600  # seconds a console session lives without use


def _key(session_id: str) -> str:
    return f"cxd:admin:session:{session_id}"


def _stores():
    return current_app.extensions["cxd.stores"]


def login(token: str) -> str:
    """Check that ``token`` grants admin and open a session; return the session id."""
    require(_stores().db, token, "admin")
    session_id = secrets.token_urlsafe(32)
    record = {
        "token_hash": hashlib.sha256(token.encode()).hexdigest(),
        "csrf": secrets.token_urlsafe(24),
    }
    _stores().redis.set(_key(session_id), json.dumps(record), ex=TTL)
    return session_id


def logout(session_id: str | None) -> None:
    """Forget a console session."""
    if session_id:
        _stores().redis.delete(_key(session_id))


def current_session() -> dict | None:
    """The request's console session if its cookie is valid and its token still grants admin."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    raw = _stores().redis.get(_key(session_id))
    if raw is None:
        return None
    record = json.loads(raw)
    row = _stores().db.fetchone(
        "SELECT role FROM cxd.tokens WHERE token_hash = %s AND revoked_at IS NULL",
        (record["token_hash"],),
    )
    if row is None or row["role"] != "admin":
        return None
    _stores().redis.expire(_key(session_id), TTL)
    return {**record, "id": session_id}


def _bearer_is_admin() -> bool:
    token = token_from_header(request.headers.get("Authorization"))
    if not token:
        return False
    try:
        require(_stores().db, token, "admin")
    except CxdError:
        return False
    return True


def csrf_token() -> str:
    """The CSRF token forms of this session must post back (empty for bearer requests)."""
    session = g.get("admin_session")
    return session["csrf"] if session else ""


def _refuse(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message, "details": None}}), status


def admin_required(view):
    """Decorator: the view needs a console session (or an admin bearer token).

    Pages redirect to the login form; ``.json`` endpoints answer 401. A POST from a
    cookie session must carry the session's CSRF token, or it is refused with 403.
    """

    @wraps(view)
    def checked(*args, **kwargs):
        session = current_session()
        if session is None and not _bearer_is_admin():
            if request.path.endswith((".json", ".part")) or request.method != "GET":
                return _refuse(401, "unauthorized", "log in at /admin/login with an admin token")
            return redirect(url_for("admin.login_form", next=request.full_path))
        g.admin_session = session
        if session is not None and request.method == "POST":
            sent = request.form.get("csrf_token", "") or request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent, session["csrf"]):
                return _refuse(403, "csrf", "the form's CSRF token is missing or stale; reload")
        return view(*args, **kwargs)

    return checked

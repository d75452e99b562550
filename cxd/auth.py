"""Bearer tokens with roles. Tokens are random, shown once, and stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

from cxd.errors import BadInput, Forbidden, Unauthorized
from cxd.ttlcache import TTLCache

ROLES = ("read", "ingest", "analyst", "admin")
# what each role may do: admin implies every other role; analyst implies read
IMPLIES = {
    "admin": set(ROLES),
    "analyst": {"analyst", "read"},
    "ingest": {"ingest"},
    "read": {"read"},
}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db, role: str, name: str | None = None) -> str:
    """Create a token with ``role`` and return it (the only time it is shown)."""
    if role not in ROLES:
        raise BadInput(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    token = f"cxd_{secrets.token_urlsafe(32)}"
    db.execute(
        "INSERT INTO cxd.tokens (token_hash, role, name) VALUES (%s, %s, %s)",
        (_hash(token), role, name),
    )
    return token


def role_of(db, token: str | None) -> str:
    """The role of a valid token; Unauthorized for a missing, unknown or revoked one."""
    if not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer TOKEN)")
    row = db.fetchone(
        "SELECT role FROM cxd.tokens WHERE token_hash = %s AND revoked_at IS NULL", (_hash(token),)
    )
    if row is None:
        raise Unauthorized("the token is not valid")
    return row["role"]


def require(db, token: str | None, role: str) -> str:
    """Check that ``token`` grants ``role``; return the token's own role."""
    have = role_of(db, token)
    if role not in IMPLIES[have]:
        raise Forbidden(f"this needs the {role!r} role; the token has {have!r}")
    return have


_recent_roles = TTLCache(ttl=1.0)


def require_recent(db, token: str | None, role: str) -> str:
    """:func:`require` with the token's role remembered for a second (hot paths only: a
    token revoked in another process may still pass for up to that second)."""
    if not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer TOKEN)")
    have = _recent_roles.get(_hash(token), lambda: role_of(db, token))
    if role not in IMPLIES[have]:
        raise Forbidden(f"this needs the {role!r} role; the token has {have!r}")
    return have


def token_from_header(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer TOKEN`` header, if any."""
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None

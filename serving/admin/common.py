"""Helpers every console page shares: stores, flash messages, secret redaction, paging args."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from flask import current_app, g, request

from cxd.stores import Stores
from serving.admin import admin
from serving.admin.session import csrf_token

MASK = "••••••"
URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s/]+@")  # user:password@ in a connection URL


def stores() -> Stores:
    """The open stores of this app."""
    return current_app.extensions["cxd.stores"]


def _flash_key() -> str | None:
    session = g.get("admin_session")
    return f"cxd:admin:flash:{session['id']}" if session else None


def flash(message: str, kind: str = "ok") -> None:
    """Show ``message`` on the next page this session renders."""
    key = _flash_key()
    if key:
        pipe = stores().redis.pipeline()
        pipe.rpush(key, json.dumps({"message": redact(message), "kind": kind}))
        pipe.expire(key, 300)
        pipe.execute()


def pop_flashes() -> list[dict[str, str]]:
    """The messages waiting for this session (removed once shown)."""
    key = _flash_key()
    if not key:
        return []
    pipe = stores().redis.pipeline()
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    return [json.loads(m) for m in pipe.execute()[0]]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif value is not None:
        yield str(value)


def secret_values() -> list[str]:
    """Every stored secret value (longest first), so pages can mask any that leak into text."""
    if "admin_secrets" not in g:
        rows = stores().db.fetchall("SELECT secrets FROM cxd.sources WHERE secrets <> '{}'")
        found = {v for r in rows for v in _strings(r["secrets"])}
        g.admin_secrets = sorted((v for v in found if len(v) >= 4), key=len, reverse=True)
    return g.admin_secrets


@admin.app_template_filter("admin_redact")
def redact(text: Any) -> Any:
    """``text`` with every secret value replaced by a mask (errors quote connection strings)."""
    if not isinstance(text, str):
        return text
    for secret in secret_values():
        text = text.replace(secret, MASK)
    return URL_PASSWORD.sub(rf"\1{MASK}@", text)


def int_arg(name: str) -> int | None:
    """An integer query argument, or None when absent or not a number."""
    value = request.args.get(name, "")
    return int(value) if value.lstrip("-").isdigit() else None


@admin.context_processor
def console_context() -> dict[str, Any]:
    """What every console template can use."""
    return {"csrf_token": csrf_token, "flashes": pop_flashes}

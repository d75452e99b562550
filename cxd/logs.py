"""Logging set-up shared by every cxd process, with secrets kept out of every line."""

from __future__ import annotations

import logging
import re

_SECRET = re.compile(
    r"((?:password|passwd|pwd|secret|token|api_?key)\s*[=:]\s*)([^\s;&,'\"]+)", re.I
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


def redact(text: str) -> str:
    """``text`` with anything that looks like a secret replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***\3", _SECRET.sub(r"\1***", text))


class RedactingFormatter(logging.Formatter):
    """A formatter that redacts secrets from the finished line."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(level: str = "INFO", name: str = "cxd") -> None:
    """Log to stderr, one line per record, secrets redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter(f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":  # the embedded Postgres narrates initdb and pg_ctl at INFO
        logging.getLogger("pgserver").setLevel(logging.WARNING)

"""Checking pushed records (webhook, MQTT) against a dataset's declared columns."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from typing import Any

from cxd.catalog import SourceSpec


def _check_value(ctype: str, value: Any) -> str | None:
    if value is None:
        return None
    if ctype in ("integer", "bigint", "smallint"):
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
                return f"expected an integer, got {value!r}"
    elif ctype in ("double precision", "real", "numeric"):
        if isinstance(value, bool):
            return f"expected a number, got {value!r}"
        try:
            float(value)
        except (TypeError, ValueError):
            return f"expected a number, got {value!r}"
    elif ctype == "boolean":
        if not isinstance(value, bool) and str(value).lower() not in (
            "true",
            "false",
            "t",
            "f",
            "0",
            "1",
        ):
            return f"expected true or false, got {value!r}"
    elif ctype in ("timestamptz", "timestamp"):
        try:
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return f"expected an ISO 8601 timestamp, got {value!r}"
    elif ctype == "date":
        try:
            date.fromisoformat(str(value))
        except ValueError:
            return f"expected an ISO 8601 date, got {value!r}"
    elif ctype == "uuid":
        try:
            uuid.UUID(str(value))
        except ValueError:
            return f"expected a UUID, got {value!r}"
    elif ctype == "text":
        if isinstance(value, dict | list):
            return f"expected text, got {json.dumps(value)[:40]}"
    return None


def record_problems(spec: SourceSpec, record: Any) -> list[dict[str, str]]:
    """Every problem of one pushed record as {field, reason} (empty when it is fine)."""
    if not isinstance(record, dict):
        return [{"field": "", "reason": "a record must be a JSON object"}]
    problems = []
    types = {c.name: c.type for c in spec.columns}
    for name in record:
        if name not in types:
            problems.append({"field": name, "reason": "not a column of the dataset"})
    for name, ctype in types.items():
        value = record.get(name)
        if value is None and (name in spec.key or name == spec.time_column):
            problems.append(
                {"field": name, "reason": "required (part of the key or the time column)"}
            )
            continue
        reason = _check_value(ctype, value)
        if reason:
            problems.append({"field": name, "reason": reason})
    return problems

"""Parsing fetched documents (CSV, JSON, NDJSON, Excel) into rows of a dataset's columns.

Shared by the HTTP and file sources: both fetch bytes, then ingest them with
:func:`parse_document` and :func:`select_columns`.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pandas as pd

from cxd.catalog import SourceSpec
from plugins.exceptions import RecordError

FORMATS = ("csv", "json", "ndjson", "xlsx")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
_MEDIA = {
    "text/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
MEDIA_TYPES = {v: k for k, v in _MEDIA.items()}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: Any) -> float:
    """Seconds in a duration setting: ``0.5s``, ``250ms``, ``10s``, ``5m``, or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 500ms, 10s, 5m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def guess_format(name: str = "", media_type: str = "") -> str | None:
    """The format a file name or a Content-Type says, or None."""
    base = media_type.split(";")[0].strip().lower()
    if base in _MEDIA:
        return _MEDIA[base]
    for suffix, fmt in _SUFFIXES.items():
        if name.lower().endswith(suffix):
            return fmt
    return None


def records_at(doc: Any, path: str | None) -> Any:
    """The part of a JSON document at a dotted ``path`` like ``data.items`` (None: the whole)."""
    for step in (path or "").split("."):
        if not step:
            continue
        if isinstance(doc, dict) and step in doc:
            doc = doc[step]
        elif isinstance(doc, list) and step.isdigit() and int(step) < len(doc):
            doc = doc[int(step)]
        else:
            raise RecordError(f"records path {path!r}: no {step!r} in the document")
    return doc


def parse_document(
    content: bytes,
    fmt: str,
    *,
    records_path: str | None = None,
    sheet: str | int | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Rows of one document; raise :class:`RecordError` naming why it cannot be parsed."""
    try:
        if fmt == "csv":
            if not content.strip():
                return pd.DataFrame()
            return pd.read_csv(
                io.BytesIO(content),
                dtype=str,
                keep_default_na=False,
                sep=delimiter,
                encoding=encoding,
            )
        if fmt == "json":
            doc = records_at(json.loads(content.decode(encoding)), records_path)
            if isinstance(doc, dict):
                doc = [doc]
            if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
                raise RecordError("expected a JSON object or an array of objects")
            return pd.DataFrame(doc)
        if fmt == "ndjson":
            rows = []
            for n, line in enumerate(content.decode(encoding).splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise RecordError(f"line {n} is not JSON: {exc}") from None
            return pd.DataFrame(rows)
        if fmt == "xlsx":
            frame = pd.read_excel(
                io.BytesIO(content), sheet_name=sheet or 0, dtype=object, engine="openpyxl"
            )
            return frame.astype(object).where(frame.notna(), None)
    except RecordError:
        raise
    except (ValueError, UnicodeDecodeError, KeyError, pd.errors.ParserError) as exc:
        raise RecordError(f"not valid {fmt}: {exc}") from None
    except Exception as exc:  # openpyxl raises zipfile / its own errors on a bad workbook
        raise RecordError(f"not valid {fmt}: {type(exc).__name__}: {exc}") from None
    raise RecordError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def select_columns(frame: pd.DataFrame, spec: SourceSpec, where: str = "") -> pd.DataFrame:
    """The declared columns of ``frame`` (matched ignoring case); RecordError if any is missing."""
    if frame.empty and not len(frame.columns):
        return pd.DataFrame(columns=spec.column_names)
    by_lower = {str(c).strip().lower(): c for c in frame.columns}
    missing = [n for n in spec.column_names if n not in by_lower]
    if missing:
        prefix = f"{where}: " if where else ""
        raise RecordError(
            f"{prefix}missing column(s) {', '.join(missing)}"
            f" (found: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    out = frame[[by_lower[n] for n in spec.column_names]]
    out.columns = spec.column_names
    return out

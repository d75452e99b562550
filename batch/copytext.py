"""Rows as PostgreSQL ``COPY ... FROM STDIN`` text, built column by column.

The loads spend most of their client time turning values into COPY input, so this is
done per column (nulls, escaping) with one join per row, and handed to the COPY in
blocks as it is made: Postgres parses one block while the next is being built.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

NULL = "\\N"
BLOCK_ROWS = 20_000
_SPECIAL = ("\\", "\t", "\n", "\r")


def _escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def field_column(values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
    """``values`` as COPY text fields: nulls (None, NaN, NA) as ``\\N``, the rest escaped.

    Strings pass unchanged unless they hold a backslash, tab or line break; other values
    become text (bools as true/false, floats by repr, dicts and lists as JSON).
    """
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object)
    arr = np.array(values, dtype=object)  # a copy: nulls are written into it
    null = pd.isna(arr)
    anynull = bool(null.any())
    present = arr[~null] if anynull else arr
    if pd.api.types.infer_dtype(present, skipna=False) not in ("string", "empty"):
        arr = np.array([v if null[i] else _as_text(v) for i, v in enumerate(arr)], dtype=object)
        present = arr[~null] if anynull else arr
    joined = "".join(present)
    if any(ch in joined for ch in _SPECIAL):
        arr = np.array([v if null[i] else _escape(v) for i, v in enumerate(arr)], dtype=object)
    if anynull:
        arr[null] = NULL
    return arr


def constant_field(value: Any) -> str:
    """One value as a COPY text field (for a column that is the same on every row)."""
    if value is None:
        return NULL
    return _escape(_as_text(value))


def blocks(
    columns: Sequence[np.ndarray], tail: Sequence[str] = (), rows: int = BLOCK_ROWS
) -> Iterator[bytes]:
    """COPY text of the rows made of ``columns`` (from :func:`field_column`) followed by
    the constant fields ``tail``, in blocks of ``rows`` rows."""
    n = len(columns[0]) if columns else 0
    end = "".join("\t" + t for t in tail) + "\n"
    for start in range(0, n, rows):
        lines = map("\t".join, zip(*(c[start : start + rows] for c in columns), strict=True))
        yield (end.join(lines) + end).encode()


class BlockReader:
    """A file-like object over byte blocks, for ``cursor.copy_expert``: each ``read``
    returns the next whole block (psycopg2 sends what ``read`` returns, whatever its
    size, and lets other threads run while it waits on the socket)."""

    def __init__(self, source: Iterator[bytes]):
        self._source = iter(source)

    def read(self, size: int = -1) -> bytes:
        return next(self._source, b"")

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)

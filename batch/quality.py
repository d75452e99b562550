"""Data quality: typing every value, row checks that quarantine failing rows, and dataset
checks that can stop a load.

Checks are declared on a source (``checks:``), one mapping each::

    checks:
      - {column: temp, not_null: true}
      - {column: temp, range: [-60, 60]}          # either bound may be null (open)
      - {column: status, allowed: [open, closed]}
      - {unique: [origin, time_hour]}             # later duplicates in one load are quarantined
      - {row_count_drop: 0.5}                     # fail if rows fall >50% below the last run
      - {staleness: 2h}                           # newest time_column value older than 2h
      - {column: temp, range: [0, 1], severity: error, name: temp_ok}

Row checks (type, required, not_null, range, allowed, unique) send failing rows to
``cxd.quarantine`` with the check and reason; the good rows load. Dataset checks
(row_count_drop, staleness) write a quality event; with ``severity: error`` (the default
for row_count_drop) the whole load is rolled back and the run fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cxd.catalog import SourceSpec, parse_duration

ROW_CHECKS = ("not_null", "range", "allowed", "unique")
DATASET_CHECKS = ("row_count_drop", "staleness")
SEVERITIES = ("info", "warning", "error")
_INT_BOUNDS = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
_INT_RE = r"\s*[+-]?\d+\s*"
_UUID_RE = r"\s*\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?\s*"
_BOOL_TEXT = {"true", "false", "t", "f", "yes", "no", "y", "n", "on", "off", "1", "0"}
_NUMERIC = ("integer", "bigint", "smallint", "double precision", "real", "numeric")
_TIMES = ("timestamptz", "timestamp", "date")


def _kind(check: dict[str, Any]) -> str | None:
    for kind in (*ROW_CHECKS, *DATASET_CHECKS):
        if kind in check:
            return kind
    return None


def check_name(check: dict[str, Any]) -> str:
    """The name a check's quarantine rows and events carry (``range:temp`` unless named)."""
    if check.get("name"):
        return str(check["name"])
    kind = _kind(check) or "check"
    if kind == "unique":
        cols = check["unique"] if isinstance(check["unique"], list) else [check.get("column")]
        return f"unique:{','.join(map(str, cols))}"
    column = check.get("column")
    return f"{kind}:{column}" if column else kind


def check_problems(spec: SourceSpec) -> list[str]:
    """Every problem with the declared checks, as sentences (empty when they are fine)."""
    problems = []
    names = set(spec.column_names)
    for i, check in enumerate(spec.checks):
        where = f"checks[{i}]"
        kind = _kind(check)
        if kind is None:
            problems.append(f"{where}: needs one of {', '.join(ROW_CHECKS + DATASET_CHECKS)}")
            continue
        column = check.get("column")
        if column is not None and column not in names:
            problems.append(f"{where}.column: {column!r} is not a declared column")
        if kind in ("not_null", "range", "allowed") and column is None:
            problems.append(f"{where}: {kind} needs a column")
        if check.get("severity", "warning") not in SEVERITIES:
            problems.append(f"{where}.severity: must be one of {', '.join(SEVERITIES)}")
        value = check[kind]
        if kind == "range":
            if not (isinstance(value, list) and len(value) == 2):
                problems.append(f"{where}.range: must be [low, high] (either may be null)")
        elif kind == "allowed" and not isinstance(value, list):
            problems.append(f"{where}.allowed: must be a list of values")
        elif kind == "unique":
            cols = value if isinstance(value, list) else [column]
            for col in cols:
                if col not in names:
                    problems.append(f"{where}.unique: {col!r} is not a declared column")
        elif kind == "row_count_drop":
            if not isinstance(value, int | float) or not 0 < value <= 1:
                problems.append(f"{where}.row_count_drop: a fraction in (0, 1], e.g. 0.5")
        elif kind == "staleness":
            try:
                parse_duration(value)
            except ValueError as exc:
                problems.append(f"{where}.staleness: {exc}")
            if not (column or spec.time_column):
                problems.append(f"{where}: staleness needs a column or a time_column")
    return problems


@dataclass
class Rejects:
    """Rows of one chunk that failed: position -> (check name, reason)."""

    found: dict[int, tuple[str, str]] = field(default_factory=dict)

    def add(self, mask: np.ndarray, check: str, reason: Callable[[int], str] | str) -> None:
        """Record the rows of ``mask`` (first failure of a row wins); ``reason`` may be a
        function of the row position, called only for failing rows."""
        for pos in np.flatnonzero(mask):
            if pos not in self.found:
                why = reason if isinstance(reason, str) else reason(int(pos))
                self.found[int(pos)] = (check, why)


def _stripped(series: pd.Series) -> pd.Series:
    """Values as stripped strings where they are strings (vectorised for string columns)."""
    if pd.api.types.is_string_dtype(series) and series.dtype != object:
        return series.str.strip().astype(object)
    return series.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)


def _nulls(values: pd.Series, ctype: str) -> np.ndarray:
    null = values.isna().to_numpy(dtype=bool)
    if ctype != "text":  # an empty CSV field is a null for every type but text
        null = null | (values == "").to_numpy(dtype=bool)
    return null


def _as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(series) and series.dtype != object:
        return series.astype(object)
    return series.astype(object).map(
        lambda v: json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
    )


def _flag(found: pd.Series) -> np.ndarray:
    return found.to_numpy(dtype=bool, na_value=False)


def type_column(
    series: pd.Series, ctype: str
) -> tuple[pd.Series, np.ndarray, Callable[[int], str] | str]:
    """``series`` as the text COPY reads for a ``ctype`` column: (text, bad mask, reason).

    Values that Postgres could not cast are marked bad, so they can be quarantined before
    the COPY rather than failing it. ``reason`` is a function of a bad row's position.
    """
    original = series.reset_index(drop=True)
    series = original
    n = len(series)
    bad = np.zeros(n, dtype=bool)

    def said(template: str) -> Callable[[int], str]:
        return lambda pos: template.format(v=original.iloc[pos])

    if ctype == "text" or ctype == "jsonb":
        text = _as_text(series) if ctype == "text" else series.astype(object).map(_json_text)
        null = series.isna().to_numpy(dtype=bool)
        if ctype == "jsonb":
            bad = ~null & text.isna().to_numpy(dtype=bool)
            reason: Callable[[int], str] | str = said("expected JSON, got {v!r:.60}")
        else:
            bad = ~null & _flag(text.str.contains("\x00", regex=False))
            reason = "text may not contain a NUL character"
    elif pd.api.types.is_bool_dtype(series) and ctype != "boolean":
        null = series.isna().to_numpy(dtype=bool)
        text, bad, reason = _as_text(series), ~null, said(f"expected {ctype}, got {{v!r}}")
    elif ctype in ("integer", "bigint", "smallint"):
        reason = said(f"expected an integer ({ctype}), got {{v!r}}")
        if series.dtype in (np.int64, np.float64):  # numbers from JSON or a typed frame
            limit = _INT_BOUNDS[ctype]
            null = series.isna().to_numpy(dtype=bool)
            values = series.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                bad = ~null & (((values % 1) != 0) | (values >= limit) | (values < -limit))
            good = ~(null | bad)
            exact = series.to_numpy() if series.dtype == np.int64 else values
            text = pd.Series(np.full(n, None, dtype=object))
            text[good] = exact[good].astype(np.int64).astype(str).astype(object)
        elif pd.api.types.is_numeric_dtype(series):
            null = series.isna().to_numpy(dtype=bool)
            values = series.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                bad = ~null & ((values % 1) != 0)
            text = pd.Series(
                [None if (null[i] or bad[i]) else str(int(v)) for i, v in enumerate(values)],
                dtype=object,
            )
        else:
            text = _stripped(series)
            null = _nulls(text, ctype)
            bad = ~null & ~_flag(text.astype(str).str.fullmatch(_INT_RE))
        if series.dtype not in (np.int64, np.float64) and not bad.all():
            nums = pd.to_numeric(text.where(~(bad | null)), errors="coerce")
            limit = _INT_BOUNDS[ctype]
            bad = bad | (~null & _flag((nums >= limit) | (nums < -limit)))
    elif ctype in ("double precision", "real", "numeric"):
        reason = said("expected a number, got {v!r}")
        if series.dtype in (np.int64, np.float64):
            # numpy writes the shortest text that reads back as the same double, like repr
            values = series.to_numpy()
            null = series.isna().to_numpy(dtype=bool)
            text = pd.Series(np.full(n, None, dtype=object))
            text[~null] = values[~null].astype(str).astype(object)
        elif pd.api.types.is_numeric_dtype(series):
            text = series.astype(object).map(repr_number)
            null = text.isna().to_numpy(dtype=bool)
        else:
            text = _stripped(series)
            null = _nulls(text, ctype)
            nums = pd.to_numeric(text.where(~null), errors="coerce")
            bad = ~null & nums.isna().to_numpy(dtype=bool)
    elif ctype == "boolean":
        reason = said("expected true or false, got {v!r}")
        if pd.api.types.is_bool_dtype(series):
            text = series.astype(object).map(
                lambda v: None if pd.isna(v) else ("true" if v else "false")
            )
            null = text.isna().to_numpy(dtype=bool)
        else:
            # Python bools arrive in object columns too (ODBC, JSON records)
            series = series.map(lambda v: ("true" if v else "false") if isinstance(v, bool) else v)
            text = _stripped(series).map(lambda v: v.lower() if isinstance(v, str) else v)
            null = _nulls(text, ctype)
            bad = ~null & ~text.astype(str).isin(_BOOL_TEXT).to_numpy(dtype=bool)
    elif ctype in _TIMES:
        what = "date" if ctype == "date" else "timestamp"
        reason = said(f"expected an ISO 8601 {what}, got {{v!r}}")
        if pd.api.types.is_datetime64_any_dtype(series):
            null = series.isna().to_numpy(dtype=bool)
            text = pd.Series(
                [None if null[i] else v.isoformat() for i, v in enumerate(series)], dtype=object
            )
        else:
            text = _stripped(series)
            if text.map(lambda v: hasattr(v, "isoformat")).any():
                text = text.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
            null = _nulls(text, ctype)
            parsed = pd.to_datetime(text.where(~null), errors="coerce", utc=True, format="ISO8601")
            bad = ~null & parsed.isna().to_numpy(dtype=bool)
    elif ctype == "uuid":
        reason = said("expected a UUID, got {v!r}")
        text = _stripped(series)
        null = _nulls(text, ctype)
        bad = ~null & ~_flag(text.astype(str).str.fullmatch(_UUID_RE))
    else:
        raise ValueError(f"unknown column type {ctype!r}")
    text = pd.Series(text.to_numpy(dtype=object), index=original.index, dtype=object)
    text = text.where(~(null | bad), None)
    return text, bad, reason


def repr_number(value: Any) -> str | None:
    """A number as text Postgres reads (None for NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return repr(float(value)) if isinstance(value, float) else str(value)


def _json_text(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return None
        return value
    return json.dumps(value, default=str)


def required_columns(spec: SourceSpec) -> list[str]:
    """Columns every row must have: the key and (for time series) the time column."""
    cols = list(spec.key)
    if spec.time_column and spec.time_column not in cols:
        cols.append(spec.time_column)
    return cols


class ChunkChecker:
    """Types and row-checks chunks of one load, remembering keys across chunks."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.row_checks = [c for c in spec.checks if _kind(c) in ROW_CHECKS]
        self._seen: dict[str, np.ndarray] = {}

    def check(self, frame: pd.DataFrame, *, trust: bool = False) -> tuple[pd.DataFrame, Rejects]:
        """(typed text frame of the declared columns, rejected rows) for one chunk.

        With ``trust``, text columns are handed to Postgres as they are (it checks them
        during the COPY, much faster); the loader re-checks a chunk here without ``trust``
        when the COPY refuses a value.
        """
        rejects = Rejects()
        typed = {}
        for col in self.spec.columns:
            series = frame[col.name]
            if trust and pd.api.types.is_string_dtype(series) and series.dtype != object:
                values = series.to_numpy(dtype=object, na_value=None, copy=True)
                if col.type != "text":
                    values[values == ""] = None  # an empty CSV field is a null but in text
            else:
                text, bad, reason = type_column(series, col.type)
                rejects.add(bad, f"type:{col.name}", reason)
                values = text.to_numpy(dtype=object)
            typed[col.name] = values
        out = pd.DataFrame(typed)
        out.index = frame.index
        for name in required_columns(self.spec):
            values = out[name].to_numpy(dtype=object)
            missing = pd.isna(values) | (values == "")
            why = "part of the key" if name in self.spec.key else "the time column"
            rejects.add(missing, f"required:{name}", f"{name} is required ({why})")
        for check in self.row_checks:
            self._row_check(check, frame, out, rejects)
        return out, rejects

    def _row_check(
        self, check: dict[str, Any], frame: pd.DataFrame, out: pd.DataFrame, rejects: Rejects
    ) -> None:
        kind, name, column = _kind(check), check_name(check), check.get("column")
        if kind == "not_null":
            if check["not_null"]:
                rejects.add(out[column].isna().to_numpy(), name, f"{column} is null")
        elif kind == "allowed":
            allowed = {str(v) for v in check["allowed"]}
            values = out[column]
            mask = values.notna().to_numpy() & ~values.isin(allowed).to_numpy()
            rejects.add(
                mask,
                name,
                lambda pos: f"{column}={values.iloc[pos]!r} is not one of {sorted(allowed)}",
            )
        elif kind == "range":
            low, high = check["range"]
            ctype = self.spec.column_type(column)
            if ctype in _TIMES:
                values = pd.to_datetime(out[column], errors="coerce", utc=True, format="ISO8601")

                def bound(b):
                    return pd.Timestamp(b, tz="UTC") if b is not None else None
            else:
                values = pd.to_numeric(out[column], errors="coerce")

                def bound(b):
                    return b

            mask = np.zeros(len(out), dtype=bool)
            if low is not None:
                mask |= (values < bound(low)).to_numpy(dtype=bool, na_value=False)
            if high is not None:
                mask |= (values > bound(high)).to_numpy(dtype=bool, na_value=False)
            rejects.add(
                mask,
                name,
                lambda pos: f"{column}={out[column].iloc[pos]} is outside [{low}, {high}]",
            )
        elif kind == "unique":
            cols = check["unique"] if isinstance(check["unique"], list) else [column]
            hashes = pd.util.hash_pandas_object(out[cols].fillna("\x00null"), index=False)
            hashes = hashes.to_numpy()
            seen = self._seen.get(name, np.empty(0, dtype=np.uint64))
            mask = pd.Series(hashes).duplicated(keep="first").to_numpy() | np.isin(hashes, seen)
            rejects.add(
                mask, name, f"duplicate {', '.join(cols)}: an earlier row of this load has it"
            )
            self._seen[name] = np.concatenate([seen, hashes[~mask]])


def dataset_checks(spec: SourceSpec) -> list[dict[str, Any]]:
    """The declared checks that look at the whole load (row_count_drop, staleness)."""
    return [c for c in spec.checks if _kind(c) in DATASET_CHECKS]


def severity(check: dict[str, Any]) -> str:
    """Declared severity, else error for row_count_drop and warning for the rest."""
    return check.get("severity") or ("error" if _kind(check) == "row_count_drop" else "warning")


def evaluate_dataset_check(
    cur, spec: SourceSpec, check: dict[str, Any], *, staged: int, previous: int | None
) -> str | None:
    """The condition a dataset check finds (a sentence), or None when it passes."""
    from psycopg2 import sql

    from batch.tables import raw_table

    kind = _kind(check)
    if kind == "row_count_drop":
        if not previous:
            return None
        floor = previous * (1 - float(check["row_count_drop"]))
        if staged < floor:
            return (
                f"{staged} rows is {100 * (1 - staged / previous):.0f}% below the last run's"
                f" {previous} (allowed drop {100 * float(check['row_count_drop']):.0f}%)"
            )
        return None
    column = check.get("column") or spec.time_column
    seconds = parse_duration(check["staleness"])
    cur.execute(
        sql.SQL("SELECT max({c}), max({c}) < now() - make_interval(secs => %s) FROM {t}").format(
            c=sql.Identifier(column), t=raw_table(spec.name)
        ),
        (seconds,),
    )
    newest, stale = cur.fetchone()
    if newest is None:
        return f"{spec.name} has no rows, so {column} has no newest value"
    if stale:
        return f"newest {column} is {newest}, older than {check['staleness']}"
    return None


def json_row(frame: pd.DataFrame, pos: int) -> str:
    """One input row as JSON for the quarantine table."""
    row = frame.iloc[pos].to_dict()
    return json.dumps({k: (None if _is_missing(v) else v) for k, v in row.items()}, default=str)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def line_of(payload_media: str | None, position: int) -> int:
    """The line a row came from: header + position for CSV, position for line formats."""
    media = (payload_media or "").lower()
    if "csv" in media:
        return position + 2
    return position + 1


__all__ = [
    "ChunkChecker",
    "check_name",
    "check_problems",
    "dataset_checks",
    "evaluate_dataset_check",
    "line_of",
]

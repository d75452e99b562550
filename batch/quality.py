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

    def add(self, mask: np.ndarray, check: str, reasons: pd.Series | str) -> None:
        """Record the rows of ``mask`` (first failure of a row wins)."""
        for pos in np.flatnonzero(mask):
            if pos not in self.found:
                why = reasons if isinstance(reasons, str) else reasons.iloc[pos]
                self.found[int(pos)] = (check, str(why))


def _nulls(series: pd.Series, ctype: str) -> np.ndarray:
    null = series.isna().to_numpy(dtype=bool)
    if ctype != "text":  # an empty CSV field is a null for every type but text
        blank = series.astype(object).map(lambda v: isinstance(v, str) and not v.strip())
        null = null | blank.to_numpy(dtype=bool)
    return null


def _as_text(series: pd.Series) -> pd.Series:
    return series.astype(object).map(
        lambda v: json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
    )


def type_column(series: pd.Series, ctype: str) -> tuple[pd.Series, np.ndarray, pd.Series | str]:
    """``series`` as the text COPY reads for a ``ctype`` column: (text, bad mask, reason).

    Values that Postgres could not cast are marked bad, so they can be quarantined before
    the COPY rather than failing it.
    """
    null = _nulls(series, ctype)
    n = len(series)
    bad = np.zeros(n, dtype=bool)
    reason: pd.Series | str = ""
    if ctype in ("integer", "bigint", "smallint"):
        if pd.api.types.is_bool_dtype(series):
            return _as_text(series), ~null, f"expected an integer ({ctype})"
        if pd.api.types.is_numeric_dtype(series):
            values = series.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                bad = ~null & ((values % 1) != 0)
            text = pd.Series(
                [None if (null[i] or bad[i]) else str(int(v)) for i, v in enumerate(values)],
                index=series.index,
                dtype=object,
            )
        else:
            text = series.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            as_str = text.astype(str)
            bad = ~null & ~as_str.str.fullmatch(_INT_RE).to_numpy(dtype=bool, na_value=False)
            text = as_str
        if not bad.all():
            nums = pd.to_numeric(text.where(~(bad | null)), errors="coerce")
            limit = _INT_BOUNDS[ctype]
            bad = bad | (~null & ((nums >= limit) | (nums < -limit)).to_numpy(dtype=bool))
        reason = series.astype(object).map(lambda v: f"expected an integer ({ctype}), got {v!r}")
    elif ctype in ("double precision", "real", "numeric"):
        if pd.api.types.is_bool_dtype(series):
            return _as_text(series), ~null, "expected a number"
        if pd.api.types.is_numeric_dtype(series):
            text = series.astype(object).map(repr_number)
        else:
            text = series.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            nums = pd.to_numeric(text.where(~null), errors="coerce")
            bad = ~null & nums.isna().to_numpy()
            text = text.astype(str)
        reason = series.astype(object).map(lambda v: f"expected a number, got {v!r}")
    elif ctype == "boolean":
        if pd.api.types.is_bool_dtype(series):
            text = series.astype(object).map(lambda v: "true" if v else "false")
        else:
            text = series.astype(object).map(lambda v: str(v).strip().lower())
            bad = ~null & ~text.isin(_BOOL_TEXT).to_numpy()
        reason = series.astype(object).map(lambda v: f"expected true or false, got {v!r}")
    elif ctype in _TIMES:
        if pd.api.types.is_datetime64_any_dtype(series):
            text = pd.Series(series.map(lambda v: v.isoformat()), dtype=object)
        else:
            text = series.astype(object).map(
                lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v).strip()
            )
            parsed = pd.to_datetime(text.where(~null), errors="coerce", utc=True, format="ISO8601")
            bad = ~null & parsed.isna().to_numpy()
        what = "date" if ctype == "date" else "timestamp"
        reason = series.astype(object).map(lambda v: f"expected an ISO 8601 {what}, got {v!r}")
    elif ctype == "uuid":
        text = series.astype(object).map(str)
        bad = ~null & ~text.str.fullmatch(_UUID_RE).to_numpy(dtype=bool, na_value=False)
        reason = series.astype(object).map(lambda v: f"expected a UUID, got {v!r}")
    elif ctype == "jsonb":
        text = series.astype(object).map(_json_text)
        bad = ~null & text.isna().to_numpy()
        reason = series.astype(object).map(lambda v: f"expected JSON, got {str(v)[:60]!r}")
    else:
        text = _as_text(series)
        bad = ~null & text.str.contains("\x00", regex=False).to_numpy(dtype=bool, na_value=False)
        reason = "text may not contain a NUL character"
    text = text.astype(object).where(~(null | bad), None)
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

    def check(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Rejects]:
        """(typed text frame of the declared columns, rejected rows) for one chunk."""
        rejects = Rejects()
        typed = {}
        for col in self.spec.columns:
            text, bad, reason = type_column(frame[col.name], col.type)
            rejects.add(bad, f"type:{col.name}", reason)
            typed[col.name] = text
        out = pd.DataFrame(typed, index=frame.index)
        for name in required_columns(self.spec):
            values = out[name]
            missing = values.isna().to_numpy() | (values.astype(object) == "").to_numpy()
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
            reason = values.map(lambda v: f"{column}={v!r} is not one of {sorted(allowed)}")
            rejects.add(mask, name, reason)
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
            reason = out[column].map(lambda v: f"{column}={v} is outside [{low}, {high}]")
            rejects.add(mask, name, reason)
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

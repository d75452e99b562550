"""Source declarations: the YAML / REST shape of a source, checked, and stored in ``cxd.sources``.

A declaration names one source and its dataset (same name), for example::

    - name: weather
      type: file
      kind: time_series
      options: {path: "data/weather/*.csv", format: csv}
      columns: [{name: origin, type: text}, {name: time_hour, type: timestamptz}]
      key: [origin, time_hour]
      time_column: time_hour
      schedule: {every: 30m, full_refresh: "0 3 * * *"}
      checks: [{column: temp, range: [-60, 60]}]

Secrets (``secrets:`` or an option named like a password or token) are kept apart from
the spec: stored, handed to the plugin, never returned or logged.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxd.errors import BadInput, ConfigError, NotFound
from cxd.ttlcache import TTLCache

SOURCE_TYPES = ("odbc", "http", "webhook", "file", "mqtt", "python")
KINDS = ("time_series", "point_in_time", "instantaneous")
COLUMN_TYPES = (
    "text", "integer", "bigint", "smallint", "double precision", "real", "numeric",
    "boolean", "timestamptz", "timestamp", "date", "jsonb", "uuid",
)  # fmt: skip
SECRET_OPTION = re.compile(r"(password|passwd|secret|token|api_?key|credentials?)$", re.I)
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
ENGINE_COLUMNS = ("_seq", "_ingested_at", "_run_id", "_stream_id", "_valid_from", "_valid_to")
KNOWN_FIELDS = {
    "name", "type", "kind", "options", "columns", "key", "time_column", "schedule",
    "checks", "secrets", "description", "plugin", "speed", "freshness",
}  # fmt: skip
FRESHNESS_POLICIES = ("flag", "refresh")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as ``30s``, ``5m``, ``2h``, ``1d`` or a bare number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 2h or 1d")
    unit = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit


@dataclass(frozen=True)
class Column:
    """A typed column of a dataset."""

    name: str
    type: str


@dataclass
class SourceSpec:
    """One declared source and the dataset it feeds (they share the name)."""

    name: str
    type: str
    kind: str = "time_series"
    options: dict[str, Any] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    time_column: str | None = None
    schedule: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    description: str = ""
    plugin: str | None = None
    speed: dict[str, Any] = field(default_factory=dict)
    # pull sources: {max_age, policy: flag|refresh, deadline} (seconds once parsed)
    freshness: dict[str, Any] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        """Names of the declared (non-engine) columns, in order."""
        return [c.name for c in self.columns]

    def column_type(self, name: str) -> str:
        """The declared Postgres type of column ``name``."""
        for col in self.columns:
            if col.name == name:
                return col.type
        raise KeyError(name)

    def public(self) -> dict[str, Any]:
        """The declaration as the API shows it: every field, secrets listed by name only."""
        body = asdict(self)
        body.pop("secrets")
        body["columns"] = [{"name": c.name, "type": c.type} for c in self.columns]
        body["secrets"] = sorted(self.secrets)
        return body

    def to_record(self) -> dict[str, Any]:
        """The stored spec (without secrets)."""
        body = self.public()
        body.pop("secrets")
        return body


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value)
    return value


def parse_source(raw: Any, where: str = "source") -> SourceSpec:
    """Check one declaration and return its spec; raise BadInput listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise BadInput(
            f"{where}: a source must be a mapping",
            details={"problems": [f"{where}: not a mapping"]},
        )

    def bad(path: str, message: str) -> None:
        problems.append(f"{where}.{path}: {message}")

    for unknown in sorted(set(raw) - KNOWN_FIELDS):
        bad(unknown, f"unknown field (known: {', '.join(sorted(KNOWN_FIELDS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        bad("name", "required; lower-case letters, digits and _ starting with a letter, at most 63")
        name = str(name)
    stype = raw.get("type")
    if stype not in SOURCE_TYPES:
        bad("type", f"must be one of {', '.join(SOURCE_TYPES)}; got {stype!r}")
    kind = raw.get("kind", "time_series")
    if kind not in KINDS:
        bad("kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        bad("options", "must be a mapping")
        options = {}
    secrets = raw.get("secrets") or {}
    if not isinstance(secrets, dict):
        bad("secrets", "must be a mapping")
        secrets = {}
    secrets = {k: _expand_env(v) for k, v in secrets.items()}
    for opt in [k for k in options if SECRET_OPTION.search(str(k))]:
        secrets[opt] = _expand_env(options.pop(opt))
    options = {k: _expand_env(v) for k, v in options.items()}

    columns: list[Column] = []
    raw_cols = raw.get("columns")
    if not isinstance(raw_cols, list) or not raw_cols:
        bad("columns", "required: a list of {name, type}")
        raw_cols = []
    seen: set[str] = set()
    for i, col in enumerate(raw_cols):
        if not isinstance(col, dict):
            bad(f"columns[{i}]", "must be a mapping with name and type")
            continue
        cname, ctype = col.get("name"), str(col.get("type", "")).strip().lower()
        if not isinstance(cname, str) or not NAME.match(cname):
            bad(f"columns[{i}].name", f"{cname!r} is not a valid column name")
            continue
        if cname in ENGINE_COLUMNS:
            bad(f"columns[{i}].name", f"{cname!r} is reserved for the engine")
        if cname in seen:
            bad(f"columns[{i}].name", f"{cname!r} is declared twice")
        seen.add(cname)
        if ctype not in COLUMN_TYPES:
            bad(f"columns[{i}].type", f"{ctype!r} is not one of {', '.join(COLUMN_TYPES)}")
        columns.append(Column(cname, ctype))
    key = raw.get("key") or []
    if isinstance(key, str):
        key = [key]
    if not isinstance(key, list):
        bad("key", "must be a column name or a list of them")
        key = []
    for k in key:
        if not isinstance(k, str) or k not in seen:
            bad("key", f"{k!r} is not a declared column")
    time_column = raw.get("time_column")
    if time_column is not None and (not isinstance(time_column, str) or time_column not in seen):
        bad("time_column", f"{time_column!r} is not a declared column")
    elif time_column is not None and columns:
        ttype = next((c.type for c in columns if c.name == time_column), "")
        if ttype not in ("timestamptz", "timestamp", "date"):
            bad("time_column", f"{time_column!r} must be a timestamptz, timestamp or date column")
    if kind == "time_series" and not time_column and not problems:
        bad("time_column", "required for a time_series dataset")
    if kind in ("point_in_time", "instantaneous") and not key:
        bad("key", f"required for a {kind} dataset (the entity key)")
    schedule = raw.get("schedule") or {}
    if not isinstance(schedule, dict):
        bad("schedule", "must be a mapping like {every: 30m, full_refresh: '0 3 * * *'}")
        schedule = {}
    for unknown in sorted(set(schedule) - {"every", "cron", "full_refresh", "resident"}):
        bad(f"schedule.{unknown}", "unknown (known: every, cron, full_refresh, resident)")
    if "every" in schedule:
        try:
            if parse_duration(schedule["every"]) < 1:
                bad("schedule.every", "must be at least 1s")
        except ValueError as exc:
            bad("schedule.every", str(exc))
    for cron_field in ("cron", "full_refresh"):
        if cron_field in schedule:
            from croniter import croniter

            if not croniter.is_valid(str(schedule[cron_field])):
                bad(f"schedule.{cron_field}", f"{schedule[cron_field]!r} is not a cron expression")
    checks = raw.get("checks") or []
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        bad("checks", "must be a list of mappings")
        checks = []
    speed = raw.get("speed") or {}
    if not isinstance(speed, dict):
        bad("speed", "must be a mapping")
        speed = {}
    freshness = _parse_freshness(raw.get("freshness"), bad)
    if problems:
        raise BadInput(
            f"{where} has {len(problems)} problem(s): " + "; ".join(problems),
            details={"problems": problems},
        )
    return SourceSpec(
        name=name,
        type=stype,
        kind=kind,
        options=options,
        columns=columns,
        key=list(key),
        time_column=time_column,
        schedule=schedule,
        checks=checks,
        secrets=secrets,
        description=str(raw.get("description", "")),
        plugin=raw.get("plugin"),
        speed=speed,
        freshness=freshness,
    )


def _parse_freshness(raw: Any, bad) -> dict[str, Any]:
    """``freshness: {max_age: 10m, policy: flag|refresh, deadline: 10s}`` checked and kept."""
    if raw is None or raw == {}:
        return {}
    if not isinstance(raw, dict):
        bad("freshness", "must be a mapping like {max_age: 10m, policy: flag, deadline: 10s}")
        return {}
    for unknown in sorted(set(raw) - {"max_age", "policy", "deadline"}):
        bad(f"freshness.{unknown}", "unknown (known: max_age, policy, deadline)")
    out = {"policy": raw.get("policy", "flag")}
    if out["policy"] not in FRESHNESS_POLICIES:
        bad("freshness.policy", f"must be one of {', '.join(FRESHNESS_POLICIES)}")
    for name, default in (("max_age", None), ("deadline", "10s")):
        value = raw.get(name, default)
        if value is None:
            bad(f"freshness.{name}", "required")
            continue
        try:
            parse_duration(value)
        except ValueError as exc:
            bad(f"freshness.{name}", str(exc))
        out[name] = value
    return out


def load_config(path: Path) -> list[SourceSpec]:
    """Every source declared in a ``cxd.yml``; a missing file declares none."""
    if not path.exists():
        return []
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"CXD_CONFIG {path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sources", []), list):
        raise ConfigError(f"CXD_CONFIG {path}: expected a mapping with a 'sources' list")
    specs, problems = [], []
    names: set[str] = set()
    for i, raw in enumerate(doc.get("sources", [])):
        try:
            spec = parse_source(raw, where=f"sources[{i}]")
        except BadInput as exc:
            problems.extend(exc.details["problems"])
            continue
        if spec.name in names:
            problems.append(f"sources[{i}].name: {spec.name!r} is declared twice")
        names.add(spec.name)
        specs.append(spec)
    if problems:
        raise ConfigError(
            f"CXD_CONFIG {path} has {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    return specs


def _spec_from_row(row: dict[str, Any]) -> SourceSpec:
    body = dict(row["spec"])
    body["secrets"] = row.get("secrets") or {}
    spec = parse_source(body, where=f"stored source {row['name']}")
    return spec


def save_source(db, spec: SourceSpec, origin: str = "api") -> None:
    """Insert or replace a source and its dataset row."""
    _recent_sources.clear()
    cols = [{"name": c.name, "type": c.type} for c in spec.columns]
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO cxd.sources (name, type, spec, secrets, origin) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET type = EXCLUDED.type, spec = EXCLUDED.spec,"
            " secrets = EXCLUDED.secrets, origin = EXCLUDED.origin, updated_at = now()",
            (spec.name, spec.type, json.dumps(spec.to_record()), json.dumps(spec.secrets), origin),
        )
        cur.execute(
            "INSERT INTO cxd.datasets (name, kind, columns, key, time_column) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, columns = EXCLUDED.columns,"
            " key = EXCLUDED.key, time_column = EXCLUDED.time_column, updated_at = now()",
            (spec.name, spec.kind, json.dumps(cols), spec.key, spec.time_column),
        )
        cur.execute(
            "INSERT INTO cxd.watermarks (dataset) VALUES (%s) ON CONFLICT DO NOTHING", (spec.name,)
        )


def get_source(db, name: str) -> SourceSpec:
    """The stored source ``name`` (with its secrets, for plugins only)."""
    row = db.fetchone("SELECT name, spec, secrets FROM cxd.sources WHERE name = %s", (name,))
    if row is None:
        raise NotFound(f"no source or dataset named {name!r}")
    return _spec_from_row(row)


_recent_sources = TTLCache(ttl=1.0)


def get_source_recent(db, name: str) -> SourceSpec:
    """:func:`get_source` remembered for a second (hot paths: the webhook receiver). A
    change saved in this process is seen at once, one saved elsewhere within the second."""
    return _recent_sources.get(name, lambda: get_source(db, name))


def list_sources(db) -> list[SourceSpec]:
    """Every stored source, by name."""
    rows = db.fetchall("SELECT name, spec, secrets FROM cxd.sources ORDER BY name")
    return [_spec_from_row(r) for r in rows]


def delete_source(db, name: str) -> None:
    """Forget a source (its raw data stays unless the caller drops it)."""
    _recent_sources.clear()
    with db.cursor() as cur:
        cur.execute("DELETE FROM cxd.sources WHERE name = %s", (name,))
        if cur.rowcount == 0:
            raise NotFound(f"no source named {name!r}")

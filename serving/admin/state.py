"""What the console shows, read from the stores: small functions, each one bounded query.

Tables other layers add in this round (``cxd.quarantine``, ``cxd.quality_events``) are
read through :func:`table_exists`, so every page works before and after they exist.
Nothing here loads a whole dataset: previews page on ``_seq``, row counts are
estimates, charts read the newest points through the time column's index.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from typing import Any

from psycopg2 import sql

from batch.schedule import entry_ids
from cxd.catalog import COLUMN_TYPES, SourceSpec
from cxd.stores import Stores
from speed import stream
from speed.keys import latest_key, log_key

PAGE = 50
CHART_POINTS = 500
NUMERIC = ("integer", "bigint", "smallint", "double precision", "real", "numeric")
SCHEDULED_JOBS = "rq:scheduler:scheduled_jobs"  # rq-scheduler's sorted set: job id -> epoch
EXACT_UP_TO = 10_000  # row counts below this are exact; above, the planner's estimate
PREVIEW_TIMEOUT = "3s"  # a filter on an unindexed column must not hold a page for ever


def table_exists(db, name: str) -> bool:
    """True when the (schema-qualified) table exists."""
    row = db.fetchone("SELECT to_regclass(%s) IS NOT NULL AS ok", (name,))
    return bool(row and row["ok"])


def health_key(dataset: str) -> str:
    """Redis hash where a resident plugin reports its health."""
    return f"cxd:{{{dataset}}}:health"


def _row_estimates(db) -> dict[str, int]:
    """Estimated rows of every raw table (partitioned tables: the sum of their partitions)."""
    rows = db.fetchall(
        "SELECT c.relname AS name, CASE WHEN c.relkind = 'p' THEN"
        "  (SELECT coalesce(sum(greatest(ch.reltuples, 0)), 0) FROM pg_inherits i"
        "   JOIN pg_class ch ON ch.oid = i.inhrelid WHERE i.inhparent = c.oid)"
        " ELSE c.reltuples END AS n"
        " FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace"
        " WHERE ns.nspname = 'raw' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    return {r["name"]: int(r["n"]) for r in rows}


def row_count(db, dataset: str, estimate: int | None) -> tuple[int, bool]:
    """(rows, exact?): the planner's estimate for big tables, a capped exact count for small."""
    if estimate is not None and estimate >= EXACT_UP_TO:
        return estimate, False
    if not table_exists(db, f'raw."{dataset}"'):
        return 0, True
    row = db.fetchone(
        sql.SQL("SELECT count(*) AS n FROM (SELECT 1 FROM {} LIMIT %s) t").format(
            sql.Identifier("raw", dataset)
        ),
        (EXACT_UP_TO,),
    )
    return int(row["n"]), int(row["n"]) < EXACT_UP_TO


def age(moment: datetime | None) -> str:
    """How long ago ``moment`` was, in words an operator scans quickly (``3m ago``)."""
    if moment is None:
        return "never"
    seconds = max(0, (datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def stream_time(stream_id: str | None) -> datetime | None:
    """The wall-clock time encoded in a Redis stream id (None for ``0-0``)."""
    if not stream_id or stream_id == "0-0":
        return None
    return datetime.fromtimestamp(stream.parse_id(stream_id)[0] / 1000, UTC)


def next_runs(stores: Stores, specs: list[SourceSpec]) -> dict[str, datetime]:
    """The next time rq-scheduler will start each scheduled source."""
    wanted = [(spec.name, job_id) for spec in specs for job_id in entry_ids(spec)]
    if not wanted:
        return {}
    pipe = stores.redis.pipeline(transaction=False)
    for _, job_id in wanted:
        pipe.zscore(SCHEDULED_JOBS, job_id)
    out: dict[str, datetime] = {}
    for (name, _), score in zip(wanted, pipe.execute(), strict=True):
        if score is not None:
            when = datetime.fromtimestamp(score, UTC)
            out[name] = min(when, out[name]) if out.get(name) else when
    return out


def overview(stores: Stores, specs: list[SourceSpec]) -> list[dict[str, Any]]:
    """One row per source/dataset: kind, schedule, next run, last run, rows, watermark,
    speed backlog, freshness and quality alerts."""
    db = stores.db
    base = {
        r["name"]: r
        for r in db.fetchall(
            "SELECT s.name, s.paused, w.stream_id, w.refreshed_at, w.updated_at AS loaded_at,"
            " r.id AS run_id, r.status, r.queued_at, r.finished_at, r.error"
            " FROM cxd.sources s LEFT JOIN cxd.watermarks w ON w.dataset = s.name"
            " LEFT JOIN LATERAL (SELECT id, status, queued_at, finished_at, error FROM cxd.runs"
            "  WHERE dataset = s.name ORDER BY id DESC LIMIT 1) r ON true"
        )
    }
    alerts = quality_alerts(db)
    estimates = _row_estimates(db)
    names = [s.name for s in specs]
    upcoming = next_runs(stores, specs)
    pipe = stores.redis.pipeline(transaction=False)
    for name in names:
        pipe.xlen(log_key(name))
        pipe.xrevrange(log_key(name), count=1)
    speed = pipe.execute()
    out = []
    for i, spec in enumerate(specs):
        row = base.get(spec.name, {})
        backlog, newest = speed[2 * i], speed[2 * i + 1]
        speed_at = stream_time(newest[0][0].decode()) if newest else None
        batch_at = row.get("refreshed_at") or row.get("loaded_at")
        fresh = max((t for t in (batch_at, speed_at) if t), default=None)
        rows, exact = row_count(db, spec.name, estimates.get(spec.name))
        out.append(
            {
                "name": spec.name,
                "type": spec.type,
                "kind": spec.kind,
                "schedule": describe_schedule(spec),
                "paused": bool(row.get("paused")),
                "next_run": upcoming.get(spec.name),
                "last_run_id": row.get("run_id"),
                "last_status": row.get("status"),
                "last_error": row.get("error"),
                "rows": rows,
                "rows_exact": exact,
                "watermark": row.get("stream_id") or "0-0",
                "speed_backlog": int(backlog),
                "freshness": fresh,
                "freshness_age": age(fresh),
                "quality_alerts": alerts.get(spec.name, 0),
            }
        )
    return out


def describe_schedule(spec: SourceSpec) -> str:
    """The schedule in a few words (``every 30m; full 0 3 * * *``)."""
    sched = spec.schedule or {}
    parts = []
    if "every" in sched:
        parts.append(f"every {sched['every']}")
    if "cron" in sched:
        parts.append(f"cron {sched['cron']}")
    if "full_refresh" in sched:
        parts.append(f"full {sched['full_refresh']}")
    if sched.get("resident") or spec.type in ("webhook", "mqtt"):
        parts.append("resident")
    return "; ".join(parts) or "manual"


def quality_alerts(db) -> dict[str, int]:
    """Warnings and errors of the last 24 hours per dataset (empty before quality exists)."""
    if not table_exists(db, "cxd.quality_events"):
        return {}
    rows = db.fetchall(
        "SELECT dataset, count(*) AS n FROM cxd.quality_events"
        " WHERE severity IN ('warning', 'error') AND created_at > now() - interval '24 hours'"
        " GROUP BY dataset"
    )
    return {r["dataset"]: int(r["n"]) for r in rows}


# --- runs -------------------------------------------------------------------------------


def runs_page(db, dataset: str, before: int | None = None, limit: int = PAGE) -> list[dict]:
    """A page of a dataset's runs, newest first, older than run ``before`` (keyset)."""
    return db.fetchall(
        "SELECT id, mode, status, queued_at, started_at, finished_at, rows_fetched, rows_loaded,"
        " rows_quarantined, error, error_step,"
        " round(extract(epoch FROM finished_at - coalesce(started_at, queued_at)) * 1000)"
        "  AS duration_ms"
        " FROM cxd.runs WHERE dataset = %s AND id < %s ORDER BY id DESC LIMIT %s",
        (dataset, before or 2**62, limit),
    )


def run_stats(db, dataset: str) -> dict[str, Any]:
    """Counts of a dataset's runs by status (index-only on the runs index)."""
    rows = db.fetchall(
        "SELECT status, count(*) AS n FROM cxd.runs WHERE dataset = %s GROUP BY status", (dataset,)
    )
    return {r["status"]: int(r["n"]) for r in rows}


def run_detail(db, run_id: int) -> dict | None:
    """One run with its log."""
    return db.fetchone(
        "SELECT *, round(extract(epoch FROM finished_at - coalesce(started_at, queued_at)) * 1000)"
        " AS duration_ms FROM cxd.runs WHERE id = %s",
        (run_id,),
    )


def health(stores: Stores, dataset: str) -> dict[str, str]:
    """What a resident plugin last reported (empty when it reports nothing)."""
    raw = stores.redis.hgetall(health_key(dataset))
    return {k.decode(): v.decode() for k, v in sorted(raw.items())}


# --- datasets ---------------------------------------------------------------------------


def columns(db, dataset: str) -> list[dict[str, str]]:
    """Every column of the raw table with its Postgres type, declared ones first."""
    return db.fetchall(
        "SELECT column_name AS name, data_type AS type, column_name LIKE '\\_%%' AS engine"
        " FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = %s"
        " ORDER BY column_name LIKE '\\_%%', ordinal_position",
        (dataset,),
    )


def _filters(spec: SourceSpec, filters: dict[str, str]) -> tuple[list[sql.Composable], list]:
    """WHERE terms for equality filters on declared columns and a time range."""
    terms: list[sql.Composable] = []
    values: list[Any] = []
    for col in spec.columns:
        value = filters.get(col.name, "")
        if value != "" and col.type in COLUMN_TYPES:
            terms.append(sql.SQL("{} = %s::{}").format(sql.Identifier(col.name), sql.SQL(col.type)))
            values.append(value)
    if spec.time_column:
        for name, op in (("time_from", ">="), ("time_to", "<")):
            if filters.get(name):
                terms.append(
                    sql.SQL("{} {} %s::timestamptz").format(
                        sql.Identifier(spec.time_column), sql.SQL(op)
                    )
                )
                values.append(filters[name])
    if filters.get("current"):
        terms.append(sql.SQL("_valid_to IS NULL"))  # the current version of each entity
    return terms, values


def _where(terms: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(terms) if terms else sql.SQL("")


def preview(
    db, spec: SourceSpec, filters: dict[str, str], before: int | None = None, limit: int = PAGE
) -> list[dict]:
    """A page of raw rows, newest change first, older than ``_seq`` ``before`` (keyset)."""
    terms, values = _filters(spec, filters)
    if before is not None:
        terms.append(sql.SQL("_seq < %s"))
        values.append(before)
    query = sql.SQL("SELECT * FROM {}{} ORDER BY _seq DESC LIMIT %s").format(
        sql.Identifier("raw", spec.name), _where(terms)
    )
    with db.cursor(dict_rows=True) as cur:
        cur.execute(f"SET LOCAL statement_timeout = '{PREVIEW_TIMEOUT}'")
        cur.execute(query, (*values, limit))
        return [dict(r) for r in cur.fetchall()]


def _guarded_page(db, table: str, dataset: str, before: int | None, limit: int) -> list[dict]:
    if not table_exists(db, table):
        return []
    schema, name = table.split(".")
    return db.fetchall(
        sql.SQL("SELECT * FROM {} WHERE dataset = %s AND id < %s ORDER BY id DESC LIMIT %s").format(
            sql.Identifier(schema, name)
        ),
        (dataset, before or 2**62, limit),
    )


def quarantine(db, dataset: str, before: int | None = None, limit: int = PAGE) -> list[dict]:
    """A page of the dataset's quarantined rows with their reasons (newest first)."""
    return _guarded_page(db, "cxd.quarantine", dataset, before, limit)


def quality_events(db, dataset: str, before: int | None = None, limit: int = PAGE) -> list[dict]:
    """A page of the dataset's quality events (newest first)."""
    return _guarded_page(db, "cxd.quality_events", dataset, before, limit)


# --- charts -----------------------------------------------------------------------------


def chart_columns(spec: SourceSpec, y: str | None = None) -> dict[str, str | None]:
    """The chart's axes: x the time column, y a numeric column, group the entity key."""
    numeric = [c.name for c in spec.columns if c.type in NUMERIC and c.name not in spec.key]
    numeric = numeric or [c.name for c in spec.columns if c.type in NUMERIC]
    keys = [k for k in spec.key if k != spec.time_column]
    return {
        "x": spec.time_column,
        "y": y if y in numeric else (numeric[0] if numeric else None),
        "group": keys[0] if keys else None,
        "numeric": numeric,
    }


def _epoch_ms(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp() * 1000
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            return None
    return None


def chart_point(x: Any, y: Any, group: Any, source: str) -> dict[str, Any] | None:
    """One chart point: x in epoch milliseconds, y a float (None when either is unusable)."""
    try:
        yv = float(y)
    except (TypeError, ValueError):
        return None
    xv = _epoch_ms(x)
    if xv is None:
        return None
    return {"x": xv, "y": yv, "g": None if group is None else str(group), "src": source}


def batch_points(
    db, spec: SourceSpec, axes: dict, filters: dict[str, str], limit: int = CHART_POINTS
) -> list[dict[str, Any]]:
    """The newest ``limit`` (x, y, group) points of raw, oldest first (time index scan)."""
    if not axes["x"] or not axes["y"]:
        return []
    terms, values = _filters(spec, filters)
    group = sql.Identifier(axes["group"]) if axes["group"] else sql.SQL("NULL")
    query = sql.SQL("SELECT {x} AS x, {y} AS y, {g} AS g FROM {t}{w} ORDER BY {x} DESC LIMIT %s")
    query = query.format(
        x=sql.Identifier(axes["x"]),
        y=sql.Identifier(axes["y"]),
        g=group,
        t=sql.Identifier("raw", spec.name),
        w=_where(terms),
    )
    with db.cursor(dict_rows=True) as cur:
        cur.execute(f"SET LOCAL statement_timeout = '{PREVIEW_TIMEOUT}'")
        cur.execute(query, (*values, limit))
        rows = cur.fetchall()
    points = [chart_point(r["x"], r["y"], r["g"], "batch") for r in reversed(rows)]
    return [p for p in points if p]


def speed_points(
    stores: Stores, spec: SourceSpec, axes: dict, after: str, limit: int = CHART_POINTS
) -> tuple[list[dict[str, Any]], str]:
    """Live points from the speed layer with stream id > ``after``; and the last id read."""
    if not axes["x"] or not axes["y"]:
        return [], after
    events = stream.read_after(stores.redis, spec.name, after, count=limit)
    points = []
    for event_id, record in events:
        p = chart_point(
            record.get(axes["x"]), record.get(axes["y"]), record.get(axes["group"]), "speed"
        )
        if p:
            points.append({**p, "id": event_id})
    return points, (events[-1][0] if events else after)


def current_values(stores: Stores, spec: SourceSpec, axes: dict, limit: int = 200) -> list[dict]:
    """The current value of y per entity from the speed layer's latest hash (at most ``limit``)."""
    if not axes["y"]:
        return []
    bars = []
    for _, raw in itertools.islice(stores.redis.hscan_iter(latest_key(spec.name)), limit):
        record = json.loads(raw)
        try:
            value = float(record.get(axes["y"]))
        except (TypeError, ValueError):
            continue
        label = " ".join(str(record.get(k)) for k in spec.key if k != spec.time_column)
        bars.append({"label": label, "value": value})
    return sorted(bars, key=lambda b: b["label"])

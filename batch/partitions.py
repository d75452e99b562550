"""Monthly range partitions of time-series raw tables: created on demand, dropped whole by
retention (``options.retention`` of the source, a duration such as ``400d``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from psycopg2 import sql

from batch.tables import is_partitioned, raw_table
from cxd.catalog import SourceSpec, parse_duration

log = logging.getLogger(__name__)


def partition_name(dataset: str, month: datetime) -> str:
    """Name of the partition holding ``month``: ``<dataset>_p2026_05``."""
    return f"{dataset}_p{month:%Y_%m}"


def _next_month(month: datetime) -> datetime:
    return (month.replace(day=1) + timedelta(days=32)).replace(day=1)


def _bound(spec: SourceSpec, month: datetime) -> str:
    ctype = spec.column_type(spec.time_column)
    if ctype == "date":
        return f"{month:%Y-%m-%d}"
    if ctype == "timestamp":
        return f"{month:%Y-%m-%d} 00:00:00"
    return f"{month:%Y-%m-%d} 00:00:00+00"


def ensure_partitions(cur, spec: SourceSpec, source: sql.Composable) -> list[str]:
    """Create the monthly partitions the time values in ``source`` (a table) fall into."""
    if spec.kind != "time_series" or not is_partitioned(cur, spec.name):
        return []
    col = sql.Identifier(spec.time_column)
    utc = (
        sql.SQL(" AT TIME ZONE 'UTC'")
        if spec.column_type(spec.time_column) == "timestamptz"
        else sql.SQL("")
    )
    cur.execute(
        sql.SQL(
            "SELECT DISTINCT date_trunc('month', {c}{utc}) FROM {s} WHERE {c} IS NOT NULL"
        ).format(c=col, utc=utc, s=source)
    )
    return ensure_months(cur, spec, [r[0] for r in cur.fetchall()])


def ensure_months(cur, spec: SourceSpec, months) -> list[str]:
    """Create the partitions of the given months (datetimes; any day of the month)."""
    if spec.kind != "time_series" or not is_partitioned(cur, spec.name):
        return []
    months = sorted({datetime(m.year, m.month, 1) for m in months})
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (f'raw."{spec.name}"',),
    )
    have = {r[0] for r in cur.fetchall()}
    made = []
    for month in months:
        name = partition_name(spec.name, month)
        if name in have:
            continue
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM (%s) TO (%s)"
            ).format(sql.Identifier("raw", name), raw_table(spec.name)),
            (_bound(spec, month), _bound(spec, _next_month(month))),
        )
        made.append(name)
    return made


def partitions(cur, dataset: str) -> list[tuple[str, datetime]]:
    """(name, first day of month) of every monthly partition, oldest first."""
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY c.relname",
        (f'raw."{dataset}"',),
    )
    out = []
    for (name,) in cur.fetchall():
        stamp = name.rsplit("_p", 1)[-1]
        try:
            out.append((name, datetime.strptime(stamp, "%Y_%m").replace(tzinfo=UTC)))
        except ValueError:
            continue  # a partition someone else attached: never ours to drop
    return out


def drop_expired(db, spec: SourceSpec, now: datetime | None = None) -> list[str]:
    """Drop the partitions whose whole month is older than the retention; return their names."""
    retention = spec.options.get("retention")
    if spec.kind != "time_series" or not retention:
        return []
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(retention))
    dropped = []
    with db.cursor() as cur:
        if not is_partitioned(cur, spec.name):
            return []
        for name, month in partitions(cur, spec.name):
            if _next_month(month) <= cutoff:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("raw", name)))
                dropped.append(name)
    if dropped:
        log.info("retention of %s (%s): dropped %s", spec.name, retention, ", ".join(dropped))
    return dropped

"""Step between passes 3 and 4: read the speed layer, *before* Postgres (invariant 1).

The only step that does I/O while planning: it records, per dataset, the stream's
high-water mark and every event above the last watermark this process has seen (W only
grows, so events at or below it are in raw already), and for instantaneous datasets the
latest value per entity.
"""

from __future__ import annotations

import bisect

import redis

from query_router.extract_time_bounds import as_instant
from query_router.plan import Plan, SpeedView
from speed.keys import log_key
from speed.stream import high_water, latest, parse_id, read_after

LIVE_TYPES = ("webhook", "mqtt")
# (database URL, dataset) -> the highest committed W this process has read
_seen_watermarks: dict[tuple[str, str], str] = {}


def seen_watermark(scope: str, dataset: str) -> str | None:
    """The highest watermark of ``dataset`` this process has read in a snapshot."""
    return _seen_watermarks.get((scope, dataset))


def note_watermark(scope: str, dataset: str, stream_id: str) -> None:
    """Remember a committed watermark so later reads can skip events at or below it."""
    old = _seen_watermarks.get((scope, dataset), "0-0")
    if parse_id(stream_id) > parse_id(old):
        _seen_watermarks[(scope, dataset)] = stream_id


# (database URL, dataset) -> (stream ids parsed, (id, record) pairs, times parsed): the
# events above the seen watermark, decoded once per process
_entries: dict[tuple[str, str], tuple[list, list, list]] = {}


def events_above_watermark(client: redis.Redis, scope: str, spec) -> tuple[list, list, list]:
    """Events above the highest W this process has seen, read incrementally from Redis."""
    key = (scope, spec.name)
    seen = parse_id(seen_watermark(scope, spec.name) or "0-0")
    ids, entries, times = _entries.get(key, ([], [], []))
    start = bisect.bisect_right(ids, seen)
    if start:
        ids, entries, times = ids[start:], entries[start:], times[start:]
    if entries and not client.xrange(log_key(spec.name), min=entries[-1][0], max=entries[-1][0]):
        ids, entries, times = [], [], []  # the stream was recreated: start again from W
    after = entries[-1][0] if entries else (seen_watermark(scope, spec.name) or "0-0")
    new = read_after(client, spec.name, after)
    if new:  # new lists, never appended to in place: other readers keep their snapshot
        column = spec.time_column
        ids = ids + [parse_id(eid) for eid, _ in new]
        entries = entries + new
        times = times + [as_instant(rec.get(column)) if column else None for _, rec in new]
    _entries[key] = (ids, entries, times)
    return ids, entries, times


def is_live(spec) -> bool:
    """True for datasets fed through the speed layer."""
    return spec.type in LIVE_TYPES or bool(spec.speed)


def read_speed(plan: Plan, *, client: redis.Redis, scope: str = "") -> Plan:
    """Fill ``plan.speed`` from Redis for every dataset the query reads."""
    for name, spec in plan.datasets.items():
        before = high_water(client, name)
        view = SpeedView(high_water=before)
        if before != "0-0" or is_live(spec):
            if spec.kind == "instantaneous":
                view.latest = latest(client, name)
            if not view.latest:  # the latest values answer an instantaneous dataset alone
                view.ids, view.entries, view.times = events_above_watermark(client, scope, spec)
            if view.entries and parse_id(view.entries[-1][0]) > parse_id(before):
                view.high_water = view.entries[-1][0]
            if spec.time_column and view.entries:
                view.min_time = None if None in view.times else min(view.times)
        plan.speed[name] = view
    return plan

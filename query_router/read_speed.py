"""Step between passes 3 and 4: read the speed layer, *before* Postgres (invariant 1).

The only step that does I/O while planning: it records, per dataset, the stream's
high-water mark and every event above the last watermark this process has seen (W only
grows, so events at or below it are in raw already), and for instantaneous datasets the
latest value per entity.
"""

from __future__ import annotations

import bisect
import time

import orjson
import redis

from query_router import cache
from query_router.extract_time_bounds import as_instant
from query_router.plan import Frontier, Plan, SpeedView
from query_router.rewrite_merge import unique_columns
from speed.keys import log_key
from speed.stream import FIELD, high_water, latest, parse_id

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
# (database URL, dataset) -> time.monotonic() of the last read that may have missed events
# trimmed from the stream before it read them
_gaps: dict[tuple[str, str], float] = {}


def _read_from(client: redis.Redis, dataset: str, after: str) -> tuple[list, bool]:
    """Events with id > ``after``, and whether ``after`` itself was still in the stream
    (trimming removes a prefix, so then no event above it was trimmed before this read)."""
    found = client.xrange(log_key(dataset), min=after if after != "0-0" else "-")
    out = [(eid.decode(), orjson.loads(fields[FIELD])) for eid, fields in found]
    if out and out[0][0] == after:
        return out[1:], True
    return out, False


def events_above_watermark(client: redis.Redis, scope: str, spec) -> tuple[list, list, list]:
    """Events above the highest W this process has seen, read incrementally from Redis."""
    key = (scope, spec.name)
    seen_id = seen_watermark(scope, spec.name) or "0-0"
    seen = parse_id(seen_id)
    ids, entries, times = _entries.get(key, ([], [], []))
    start = bisect.bisect_right(ids, seen)
    if start:
        ids, entries, times = ids[start:], entries[start:], times[start:]
    after = entries[-1][0] if entries else seen_id
    new, contiguous = _read_from(client, spec.name, after)
    if not contiguous and entries:
        # the newest event read before is gone: trimmed, or the stream was recreated
        ids, entries, times = [], [], []
        new, contiguous = _read_from(client, spec.name, seen_id)
    if not contiguous:
        _gaps[key] = time.monotonic()
    if new:  # new lists, never appended to in place: other readers keep their snapshot
        column = spec.time_column
        ids = ids + [parse_id(eid) for eid, _ in new]
        entries = entries + new
        times = times + [as_instant(rec.get(column)) if column else None for _, rec in new]
    _entries[key] = (ids, entries, times)
    return ids, entries, times


FRONTIER_TTL = 30.0  # seconds a frontier stands in for Postgres when no load is announced
# (database URL, dataset) -> the frontier read in this process's latest snapshot
_frontiers: dict[tuple[str, str], Frontier] = {}


def forget_speed_state() -> None:
    """Forget what this process read of W, raw and the streams (a database was reset)."""
    for state in (_seen_watermarks, _entries, _gaps, _frontiers):
        state.clear()


def window_dataset(spec) -> bool:
    """True for datasets a live window can be answered for from the speed layer alone:
    live, with a time column and no declared key (a speed row never replaces a raw row)."""
    return (
        is_live(spec)
        and spec.kind != "instantaneous"
        and bool(spec.time_column)
        and not unique_columns(spec)
    )


def before_snapshot(client: redis.Redis, dataset: str) -> tuple[float, tuple[int, int] | None]:
    """What a frontier records just before its snapshot: the time and the announcements."""
    return time.monotonic(), cache.announced(client, dataset)


def note_frontier(scope: str, dataset: str, watermark: str, max_time, before) -> None:
    """Remember raw's newest time and W, read in one snapshot taken after ``before``."""
    taken, heard = before
    if heard is not None:
        _frontiers[(scope, dataset)] = Frontier(watermark, as_instant(max_time), taken, heard)


def usable_frontier(client: redis.Redis, scope: str, dataset: str) -> tuple[Frontier | None, str]:
    """The dataset's frontier if the speed layer holds every event raw gained since it."""
    key = (scope, dataset)
    found = _frontiers.get(key)
    if found is None:
        return None, "raw's newest time not read yet in this process"
    age = time.monotonic() - found.taken
    if age > FRONTIER_TTL:
        return None, f"raw's newest time was read {age:.0f} s ago (over {FRONTIER_TTL:.0f} s)"
    if (seen_watermark(scope, dataset) or "0-0") != found.watermark:
        return None, "the watermark went back since it was last read"
    if _gaps.get(key, float("-inf")) >= found.taken:
        return None, "events were trimmed from the stream before this process read them"
    if cache.announced(client, dataset) != found.announced:
        return None, "a batch load was announced since raw's newest time was read"
    return found, ""


_earliest_memo: dict[int, tuple[list, object]] = {}


def _earliest(times: list):
    """The earliest of ``times`` (None if one is unknown), once per list (lists are never
    changed in place: a new read makes a new list)."""
    found = _earliest_memo.get(id(times))
    if found is not None and found[0] is times:
        return found[1]
    value = None if None in times else min(times)
    if len(_earliest_memo) > 64:
        _earliest_memo.clear()
    _earliest_memo[id(times)] = (times, value)
    return value


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
                view.min_time = _earliest(view.times)
        if window_dataset(spec) and plan.bounds.get(name, (None, None))[0] is not None:
            view.frontier, view.no_frontier = usable_frontier(client, scope, name)
        plan.speed[name] = view
    return plan

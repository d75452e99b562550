"""Stale pull sources: when a query reads past a pull source's last refresh and that
refresh is older than the dataset's ``freshness.max_age``, its policy decides: ``flag``
answers with ``stale: true``; ``refresh`` enqueues an incremental run, waits up to
``freshness.deadline`` for it, and answers again (still flagged if it did not finish).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cxd.catalog import parse_duration
from cxd.stores import Stores
from query_router.plan import Plan
from query_router.read_speed import is_live

POLL_SECONDS = 0.05


def stale_datasets(plan: Plan, freshness: dict[str, Any], now: datetime) -> list[str]:
    """Pull datasets whose queried range reaches past a refresh older than their max age."""
    out = []
    for name, spec in plan.datasets.items():
        policy = spec.freshness
        if not policy or is_live(spec):
            continue
        refreshed = freshness["datasets"][name].get("refreshed_at")
        upper = plan.bounds.get(name, (None, None))[1]
        if refreshed is not None and upper is not None and upper.value <= refreshed:
            continue  # the range ends before the last refresh: nothing newer can matter
        if refreshed is None or (now - refreshed).total_seconds() > parse_duration(
            policy["max_age"]
        ):
            out.append(name)
    return out


def _wait(stores: Stores, run_id: int, deadline: float) -> str:
    from batch.runs import get_run

    status = "queued"
    while time.monotonic() < deadline:
        status = get_run(stores.db, run_id)["status"]
        if status in ("succeeded", "failed"):
            break
        time.sleep(POLL_SECONDS)
    return status


def apply_policy(stores: Stores, plan: Plan, result: dict[str, Any], rerun) -> dict[str, Any]:
    """Flag or refresh stale pull sources; ``rerun()`` answers the query again."""
    stale = stale_datasets(plan, result["freshness"], datetime.now(UTC))
    if not stale:
        return result
    refreshed = False
    notes: dict[str, str] = {}
    for name in stale:
        spec = plan.datasets[name]
        if spec.freshness.get("policy") != "refresh":
            notes[name] = "flag"
            continue
        from batch.jobs import enqueue_run
        from query_router.cache import bump

        run_id = enqueue_run(stores, name, "incremental")
        limit = time.monotonic() + parse_duration(spec.freshness.get("deadline", "10s"))
        status = _wait(stores, run_id, limit)
        notes[name] = f"refresh run {run_id}: {status}"
        if status == "succeeded":
            bump(stores.redis, name)
            refreshed = True
    if refreshed:
        result = rerun()
    still = set(stale_datasets(plan, result["freshness"], datetime.now(UTC)))
    for name, note in notes.items():
        entry = result["freshness"]["datasets"][name]
        entry["stale"] = name in still
        entry["refresh"] = note
    result["freshness"]["stale"] = any(
        d.get("stale") for d in result["freshness"]["datasets"].values()
    )
    return result

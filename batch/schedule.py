"""Schedules: rq-scheduler entries for every source with ``schedule: {every|cron|full_refresh}``.

cxd-ingest registers them at start and re-registers any that vanished. Entry ids are
deterministic, so registering twice (two cxd-ingest, a restart) never doubles a schedule.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from rq_scheduler import Scheduler

from batch.jobs import QUEUE
from cxd.catalog import SourceSpec, get_source, parse_duration
from cxd.stores import Stores, process_stores

log = logging.getLogger(__name__)


def slot_of(when: object, now: datetime | None = None) -> str:
    """The schedule slot ``now`` falls in: the start of the interval (seconds) or the
    cron expression's latest fire time, as ISO 8601 UTC."""
    now = now or datetime.now(UTC)
    if isinstance(when, int | float):
        start = int(now.timestamp() // when * when)
        return datetime.fromtimestamp(start, UTC).isoformat()
    from croniter import croniter

    fire = croniter(str(when), now + timedelta(seconds=1)).get_prev(datetime)
    return fire.astimezone(UTC).isoformat()


def scheduled_run(dataset: str, mode: str, when: object = None) -> int | None:
    """What a schedule enqueues: the run of ``dataset`` in ``mode`` for the current slot.

    The run's identity is (dataset, mode, slot), so two schedulers, a restart or a
    re-fired entry never run one slot twice.
    """
    from batch.jobs import enqueue_run

    slot = slot_of(when) if when is not None else None
    return enqueue_run(process_stores(), dataset, mode, slot=slot)


def scheduler(stores: Stores) -> Scheduler:
    """The rq-scheduler on the stores' Redis."""
    return Scheduler(queue_name=QUEUE, connection=stores.redis)


def entry_ids(spec: SourceSpec) -> dict[str, tuple[str, str, object]]:
    """Wanted schedule entries of a source: id -> (kind, mode, interval or cron)."""
    out: dict[str, tuple[str, str, object]] = {}
    sched = spec.schedule or {}
    if "every" in sched:
        out[f"cxd-schedule-{spec.name}-every"] = (
            "every",
            "incremental",
            parse_duration(sched["every"]),
        )
    if "cron" in sched:
        out[f"cxd-schedule-{spec.name}-cron"] = ("cron", "incremental", sched["cron"])
    if "full_refresh" in sched:
        out[f"cxd-schedule-{spec.name}-full"] = ("cron", "full", sched["full_refresh"])
    return out


def register_schedules(stores: Stores, specs: list[SourceSpec]) -> int:
    """Make sure every wanted schedule entry exists; return how many were (re)added.

    Paused sources are skipped (and their entries cancelled), so a keeper round never
    brings a paused schedule back.
    """
    sch = scheduler(stores)
    added = 0
    paused = paused_sources(stores)
    for spec in specs:
        if spec.name in paused:
            for job_id in entry_ids(spec):
                if job_id in sch:
                    sch.cancel(job_id)
            continue
        for job_id, (kind, mode, when) in entry_ids(spec).items():
            if job_id in sch:
                continue
            if kind == "every":
                sch.schedule(
                    datetime.now(UTC), scheduled_run, args=[spec.name, mode, int(when)], interval=int(when),
                    repeat=None, id=job_id, queue_name=QUEUE, result_ttl=600,
                )  # fmt: skip
            else:
                sch.cron(
                    str(when),
                    scheduled_run,
                    args=[spec.name, mode, str(when)],
                    id=job_id,
                    queue_name=QUEUE,
                    use_local_timezone=False,
                )
            added += 1
            log.info("scheduled %s (%s %s)", job_id, kind, when)
    return added


def paused_sources(stores: Stores) -> set[str]:
    """Names of the sources whose schedules are paused."""
    return {r["name"] for r in stores.db.fetchall("SELECT name FROM cxd.sources WHERE paused")}


def pause_schedule(stores: Stores, dataset: str) -> None:
    """Stop scheduling runs of ``dataset`` until :func:`resume_schedule` (runs on demand
    still work)."""
    spec = get_source(stores.db, dataset)
    stores.db.execute(
        "UPDATE cxd.sources SET paused = true, updated_at = now() WHERE name = %s", (dataset,)
    )
    sch = scheduler(stores)
    for job_id in entry_ids(spec):
        if job_id in sch:
            sch.cancel(job_id)


def resume_schedule(stores: Stores, dataset: str) -> None:
    """Schedule ``dataset`` again after :func:`pause_schedule`."""
    spec = get_source(stores.db, dataset)
    stores.db.execute(
        "UPDATE cxd.sources SET paused = false, updated_at = now() WHERE name = %s", (dataset,)
    )
    register_schedules(stores, [spec])

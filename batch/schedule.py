"""Schedules: rq-scheduler entries for every source with ``schedule: {every|cron|full_refresh}``.

cxd-ingest registers them at start and re-registers any that vanished, due where they left
off. Entry ids are deterministic, so registering twice (two cxd-ingest, a restart) never
doubles a schedule. An entry's due time is always the start of the next slot it owes;
:class:`SlotScheduler` (``cxd scheduler``) fires one job per slot, and a slot's run is
recorded once per (dataset, mode, slot), so two schedulers or a restart never run a slot
twice and a scheduler that falls behind never skips one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from rq import Retry
from rq_scheduler import Scheduler

from batch.jobs import QUEUE, backoff
from cxd.catalog import SourceSpec, get_source, parse_duration
from cxd.stores import Stores, process_stores

log = logging.getLogger(__name__)


ENTRY_PREFIX = "cxd-schedule-"
CATCH_UP = 300  # seconds: missed slots that started within this run one by one, late


def slot_start(when: object, at: datetime) -> datetime:
    """Start of the schedule slot ``at`` falls in: the interval's start (``when`` in
    seconds, counted from the epoch) or the cron expression's latest fire time (UTC)."""
    at = at.astimezone(UTC)
    if isinstance(when, int | float):
        return datetime.fromtimestamp(int(at.timestamp() // int(when) * int(when)), UTC)
    from croniter import croniter

    prev = croniter(str(when), at).get_prev(datetime).astimezone(UTC)
    nxt = croniter(str(when), prev).get_next(datetime).astimezone(UTC)
    return nxt if nxt <= at else prev  # ``at`` on a fire time is that fire's slot


def following_slot(when: object, slot: datetime) -> datetime:
    """Start of the slot after the one starting at ``slot``."""
    start = slot_start(when, slot)
    if isinstance(when, int | float):
        return start + timedelta(seconds=int(when))
    from croniter import croniter

    return croniter(str(when), start).get_next(datetime).astimezone(UTC)


def slot_of(when: object, now: datetime | None = None) -> str:
    """The schedule slot ``now`` falls in, as ISO 8601 UTC (the slot's start)."""
    return slot_start(when, now or datetime.now(UTC)).isoformat()


def first_due(when: object, last: datetime | None, now: datetime | None = None) -> datetime:
    """When a (re-)registered entry fires first, given the latest slot that has a run.

    The slot after ``last`` if it started within :data:`CATCH_UP` (an entry that vanished
    catches up what it missed); otherwise the current slot for an interval (a new
    schedule runs at once) or the next fire time for a cron expression that never ran.
    A cron schedule that ran before but missed more than ``CATCH_UP`` runs its latest
    fire time now, once.
    """
    now = now or datetime.now(UTC)
    if last is not None:
        nxt = following_slot(when, last)
        if nxt >= now - timedelta(seconds=CATCH_UP):
            return nxt
        return slot_start(when, now)
    if isinstance(when, int | float):
        return slot_start(when, now)
    return following_slot(when, now)


def slot_job_id(dataset: str, mode: str, slot: datetime) -> str:
    """The rq job id of one slot of one schedule: the same in every scheduler."""
    return f"cxd-slot-{dataset}-{mode}-{slot.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def scheduled_run(
    dataset: str, mode: str, when: object = None, slot: str | None = None
) -> int | None:
    """What a schedule enqueues: the run of ``dataset`` in ``mode`` for ``slot``.

    The run's identity is (dataset, mode, slot), so two schedulers, a restart or a
    re-fired entry never run one slot twice. Without ``slot`` (an entry fired by a plain
    rq-scheduler) the slot is the one the current time falls in.
    """
    from batch.jobs import enqueue_run

    if slot is None and when is not None:
        slot = slot_of(when)
    return enqueue_run(process_stores(), dataset, mode, slot=slot)


class SlotScheduler(Scheduler):
    """rq-scheduler that fires cxd's schedule entries slot by slot.

    An entry's score in the scheduled-jobs set is the start of the next slot it owes.
    When it is due, one job per owed slot is enqueued (id from :func:`slot_job_id`), and
    the entry moves to the start of the following slot (not "now + interval", which
    drifts and skips slots). Slots missed by less than :data:`CATCH_UP` seconds (every
    scheduler stopped for a while) are all fired, late; an older gap is coalesced into
    the current slot. Other entries (the speed loader's) behave as in rq-scheduler.
    """

    def enqueue_job(self, job):
        if not job.id.startswith(ENTRY_PREFIX) or len(job.args) < 3:
            return super().enqueue_job(job)
        dataset, mode, when = job.args[:3]
        score = self.connection.zscore(self.scheduled_jobs_key, job.id)
        if score is None:
            return None  # cancelled meanwhile (paused, deleted)
        now = datetime.now(UTC)
        due = slot_start(when, datetime.fromtimestamp(score, UTC))
        if due < now - timedelta(seconds=CATCH_UP):
            log.warning(
                "%s: slots from %s to now were missed; running the current one", job.id, due
            )
            due = slot_start(when, now)
        queue = self.get_queue_for_job(job)
        waits = backoff()
        while due <= now:
            queue.enqueue(
                scheduled_run, dataset, mode, when, due.isoformat(),
                job_id=slot_job_id(dataset, mode, due), result_ttl=600, failure_ttl=86400,
                retry=Retry(max=len(waits), interval=waits) if waits else None,
            )  # fmt: skip
            log.info("%s: fired slot %s", job.id, due.isoformat())
            due = following_slot(when, due)
        # only if still registered: a cancel (pause, delete) meanwhile is not undone
        self.connection.zadd(self.scheduled_jobs_key, {job.id: due.timestamp()}, xx=True)
        return None


def scheduler(stores: Stores) -> SlotScheduler:
    """The rq-scheduler on the stores' Redis."""
    return SlotScheduler(queue_name=QUEUE, connection=stores.redis)


def entry_ids(spec: SourceSpec) -> dict[str, tuple[str, str, object]]:
    """Wanted schedule entries of a source: id -> (kind, mode, interval or cron)."""
    out: dict[str, tuple[str, str, object]] = {}
    sched = spec.schedule or {}
    if "every" in sched:
        out[f"{ENTRY_PREFIX}{spec.name}-every"] = (
            "every",
            "incremental",
            parse_duration(sched["every"]),
        )
    if "cron" in sched:
        out[f"{ENTRY_PREFIX}{spec.name}-cron"] = ("cron", "incremental", sched["cron"])
    if "full_refresh" in sched:
        out[f"{ENTRY_PREFIX}{spec.name}-full"] = ("cron", "full", sched["full_refresh"])
    return out


def last_slot(stores: Stores, dataset: str, mode: str) -> datetime | None:
    """The latest schedule slot of ``dataset`` in ``mode`` that has a run."""
    row = stores.db.fetchone(
        "SELECT max(slot) AS slot FROM cxd.runs WHERE dataset = %s AND mode = %s"
        " AND slot IS NOT NULL",
        (dataset, mode),
    )
    return datetime.fromisoformat(row["slot"]) if row and row["slot"] else None


def register_schedules(stores: Stores, specs: list[SourceSpec], *, catch_up: bool = True) -> int:
    """Make sure every wanted schedule entry exists; return how many were (re)added.

    A (re-)added entry is due at :func:`first_due`: slots it missed while it was gone
    are caught up (unless ``catch_up`` is false: a resumed schedule starts afresh).
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
                when = int(when)
            due = first_due(when, last_slot(stores, spec.name, mode) if catch_up else None)
            if kind == "every":
                sch.schedule(
                    due, scheduled_run, args=[spec.name, mode, when], interval=when,
                    repeat=None, id=job_id, queue_name=QUEUE, result_ttl=600,
                )  # fmt: skip
            else:  # what rq-scheduler's cron() stores, due at our slot rather than its next
                sch.schedule(
                    due, scheduled_run, args=[spec.name, mode, str(when)], id=job_id,
                    queue_name=QUEUE, result_ttl=-1,
                    meta={"cron_string": str(when), "use_local_timezone": False},
                )  # fmt: skip
            added += 1
            log.info("scheduled %s (%s %s), first slot %s", job_id, kind, when, due.isoformat())
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
    register_schedules(stores, [spec], catch_up=False)  # the paused slots stay skipped

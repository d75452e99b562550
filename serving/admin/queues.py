"""rq queues, workers and failed jobs as the console shows them."""

from __future__ import annotations

from typing import Any

from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry

from cxd.errors import NotFound


def queues(redis) -> list[dict[str, Any]]:
    """Every rq queue with its waiting, started and failed counts."""
    out = []
    for q in sorted(Queue.all(connection=redis), key=lambda q: q.name):
        out.append(
            {
                "name": q.name,
                "queued": q.count,
                "started": q.started_job_registry.count,
                "failed": q.failed_job_registry.count,
                "finished": q.finished_job_registry.count,
            }
        )
    return out


def workers(redis) -> list[dict[str, Any]]:
    """Every live rq worker: name, state, queues and current job."""
    out = []
    for w in sorted(Worker.all(connection=redis), key=lambda w: w.name):
        out.append(
            {
                "name": w.name,
                "state": w.get_state(),
                "queues": ", ".join(w.queue_names()),
                "job": w.get_current_job_id(),
                "birth": w.birth_date,
                "heartbeat": w.last_heartbeat,
                "done": w.successful_job_count,
                "failed": w.failed_job_count,
            }
        )
    return out


def failed_jobs(redis, offset: int = 0, limit: int = 25) -> list[dict[str, Any]]:
    """A page of failed jobs over every queue, with their tracebacks."""
    out = []
    for q in sorted(Queue.all(connection=redis), key=lambda q: q.name):
        registry = FailedJobRegistry(queue=q)
        ids = registry.get_job_ids(0, offset + limit - 1)
        for job in Job.fetch_many(ids, connection=redis):
            if job is None:
                continue
            result = job.latest_result()
            out.append(
                {
                    "id": job.id,
                    "queue": q.name,
                    "func": job.func_name,
                    "args": repr(job.args)[:200],
                    "ended_at": job.ended_at,
                    "traceback": (result.exc_string if result else None) or "",
                }
            )
    return out[offset : offset + limit]


def retry(redis, job_id: str) -> str:
    """Put a failed job back on its queue."""
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        raise NotFound(f"no job {job_id!r}") from None
    FailedJobRegistry(job.origin, connection=redis).requeue(job_id)
    return f"re-queued job {job_id} on {job.origin}"

"""Run records: every fetch/ingest run from queued to succeeded or failed."""

from __future__ import annotations

import json
from typing import Any

from cxd.errors import NotFound

STATUSES = ("queued", "fetching", "ingesting", "succeeded", "failed")


def create_run(
    db,
    dataset: str,
    mode: str = "incremental",
    job_id: str | None = None,
    *,
    slot: str | None = None,
    params: dict[str, Any] | None = None,
) -> int | None:
    """Record a queued run and return its id (None if the ``slot`` already has a run)."""
    row = db.fetchone(
        "INSERT INTO cxd.runs (dataset, mode, job_id, slot, params) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (dataset, mode, slot) WHERE slot IS NOT NULL DO NOTHING RETURNING id",
        (dataset, mode, job_id, slot, json.dumps(params or {}, default=str)),
    )
    return int(row["id"]) if row else None


def update_run(db, run_id: int, status: str | None = None, **fields: Any) -> None:
    """Set the status and any of the counters / timestamps of a run."""
    sets, values = [], []
    if status:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        sets.append("status = %s")
        values.append(status)
        if status in ("fetching",):
            sets.append("started_at = coalesce(started_at, now())")
        if status in ("succeeded", "failed"):
            sets.append("finished_at = now()")
    for name, value in fields.items():
        sets.append(f"{name} = %s")
        values.append(value)
    if sets:
        db.execute(f"UPDATE cxd.runs SET {', '.join(sets)} WHERE id = %s", (*values, run_id))


def log_run(db, run_id: int, message: str, **data: Any) -> None:
    """Append a line to the run's log."""
    entry = {"message": message, **data}
    db.execute(
        "UPDATE cxd.runs SET log = log || jsonb_build_array(jsonb_build_object('at', now()) || %s::jsonb)"
        " WHERE id = %s",
        (json.dumps(entry, default=str), run_id),
    )


def fail_run(db, run_id: int, step: str, error: str) -> None:
    """Mark a run failed, naming the step and the cause."""
    update_run(db, run_id, "failed", error=error, error_step=step)


def get_run(db, run_id: int) -> dict[str, Any]:
    """One run as a dict."""
    row = db.fetchone("SELECT * FROM cxd.runs WHERE id = %s", (run_id,))
    if row is None:
        raise NotFound(f"no run {run_id}")
    return row


def list_runs(db, dataset: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest runs, optionally of one dataset."""
    if dataset:
        return db.fetchall(
            "SELECT * FROM cxd.runs WHERE dataset = %s ORDER BY id DESC LIMIT %s", (dataset, limit)
        )
    return db.fetchall("SELECT * FROM cxd.runs ORDER BY id DESC LIMIT %s", (limit,))

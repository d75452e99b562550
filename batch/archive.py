"""The fetch archive: every payload is stored as received (gzip) under CXD_HOME/archive and
indexed in ``cxd.archive`` before ingest runs, so a run can be re-ingested without the source.

Retention: ``options.archive_retention`` of a source (a duration such as ``90d``), else the
``CXD_ARCHIVE_RETENTION`` environment variable, else 30 days. ``0`` keeps payloads for ever.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cxd.catalog import SourceSpec, parse_duration
from plugins.base import Payload

log = logging.getLogger(__name__)

DEFAULT_RETENTION = "30d"


def archive_dir(home: Path) -> Path:
    """The folder payload files live in."""
    return Path(home) / "archive"


def store(db, home: Path, dataset: str, run_id: int | None, payload: Payload) -> int:
    """Write ``payload`` compressed, durably, then index it; return its archive id."""
    digest = hashlib.sha256(payload.content).hexdigest()
    folder = archive_dir(home) / dataset / f"run-{run_id or 0}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest[:16]}.gz"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        gz.write(payload.content)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    row = db.fetchone(
        "INSERT INTO cxd.archive (dataset, run_id, name, media_type, meta, size, sha256, path)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            dataset,
            run_id,
            payload.name,
            payload.media_type,
            json.dumps(payload.meta, default=str),
            len(payload.content),
            digest,
            str(path),
        ),
    )
    return int(row["id"])


def entries(db, dataset: str, run_id: int | None = None) -> list[dict[str, Any]]:
    """Index rows of a dataset's archived payloads (of one run if given), oldest first."""
    if run_id is None:
        return db.fetchall("SELECT * FROM cxd.archive WHERE dataset = %s ORDER BY id", (dataset,))
    return db.fetchall(
        "SELECT * FROM cxd.archive WHERE dataset = %s AND run_id = %s ORDER BY id",
        (dataset, run_id),
    )


def read(entry: dict[str, Any]) -> Payload:
    """The payload of one index row, exactly as it was fetched (checked against its hash)."""
    from batch.exceptions import ArchiveError

    try:
        content = gzip.decompress(Path(entry["path"]).read_bytes())
    except OSError as exc:
        raise ArchiveError(
            f"archived payload {entry['id']} of {entry['dataset']!r} is unreadable at"
            f" {entry['path']}: {exc}"
        ) from None
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        raise ArchiveError(f"archived payload {entry['id']} does not match its sha256")
    meta = dict(entry.get("meta") or {})
    meta.setdefault("archive_id", entry["id"])
    meta.setdefault("run_id", entry["run_id"])
    return Payload(
        content=content, name=entry["name"] or "", media_type=entry["media_type"] or "", meta=meta
    )


def payloads(db, dataset: str, run_id: int | None = None) -> Iterator[Payload]:
    """Archived payloads of ``dataset`` (of one run if given), oldest first."""
    for entry in entries(db, dataset, run_id):
        yield read(entry)


def retention_seconds(spec: SourceSpec) -> float:
    """How long payloads of ``spec`` are kept (0 = for ever)."""
    raw = spec.options.get("archive_retention") or os.environ.get(
        "CXD_ARCHIVE_RETENTION", DEFAULT_RETENTION
    )
    return parse_duration(raw)


def prune(db, spec: SourceSpec) -> int:
    """Delete payloads older than the retention (file and index row); return how many."""
    seconds = retention_seconds(spec)
    if seconds <= 0:
        return 0
    old = db.fetchall(
        "DELETE FROM cxd.archive WHERE dataset = %s AND fetched_at < now() - make_interval(secs => %s)"
        " RETURNING path",
        (spec.name, seconds),
    )
    for row in old:
        try:
            Path(row["path"]).unlink(missing_ok=True)
            Path(row["path"]).parent.rmdir()
        except OSError:
            pass  # the run folder still holds other payloads
    if old:
        log.info("archive of %s: pruned %d payload(s) past retention", spec.name, len(old))
    return len(old)

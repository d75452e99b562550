"""Local files: a watched folder (or glob) of CSV, JSON, NDJSON or Excel files, each loaded once.

::

    - name: weather
      type: file
      kind: time_series
      options:
        dir: data/weather/inbox        # the watched folder ...
        glob: "*.csv"                  # ... and which files in it (or path: "data/*.csv")
        format: csv                    # csv | json | ndjson | xlsx (default: from the suffix)
        settle: 2s                     # a file must stop growing for this long
        after: move                    # move: to done/ once loaded; keep: leave it in place
        watch: true                    # cxd-ingest starts a run when a file arrives (default)
        done_dir: data/weather/done    # default <dir>/done
        quarantine_dir: data/weather/bad   # default <dir>/quarantine

A file is identified by path, size, modification time and content hash; an identity
already loaded is never loaded again. cxd-ingest watches the folder (:class:`FolderWatchers`,
a poll about every second): when a new or changed file has stopped growing for ``settle``
it enqueues a run of the source, which an rq worker executes; ``schedule:`` still works
beside it (or alone, with ``watch: false``). A file that cannot be parsed is moved to the
quarantine folder next to a ``<name>.reason`` text file, the run records the reason,
and the other files still load.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from plugins.base import Payload, SourcePlugin
from plugins.exceptions import PayloadQuarantined, RecordError
from plugins.parse import (
    FORMATS,
    MEDIA_TYPES,
    guess_format,
    parse_document,
    seconds,
    select_columns,
)
from plugins.settings import duration_problems

AFTER = ("move", "keep")
log = logging.getLogger(__name__)


def file_identity(path: Path, content: bytes) -> str:
    """The identity a file is loaded once by: path, size, mtime and content hash."""
    stat = path.stat()
    digest = hashlib.sha256(content).hexdigest()
    return f"{path.absolute()}|{stat.st_size}|{stat.st_mtime_ns}|{digest}"


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{Path(name).stem}.{n}{Path(name).suffix}"
        n += 1
    return target


class FileSource(SourcePlugin):
    """Files matching a glob; each is loaded once, after it has stopped growing."""

    type = "file"

    # -- settings ---------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every problem with the folder, glob, format, settle and after settings."""
        o = self.options
        problems = []
        if not o.get("path") and not o.get("dir"):
            problems.append(
                "options.path (a file or a glob like data/*.csv) or options.dir (a folder,"
                " with options.glob) is required"
            )
        fmt = o.get("format")
        if fmt and fmt not in FORMATS:
            problems.append(f"options.format {fmt!r} is not one of {', '.join(FORMATS)}")
        if not isinstance(o.get("watch", True), bool):
            problems.append(f"options.watch must be true or false, not {o.get('watch')!r}")
        if o.get("after", "keep") not in AFTER:
            problems.append(f"options.after {o.get('after')!r} is not one of {', '.join(AFTER)}")
        problems += duration_problems(o, "settle")
        return problems

    @property
    def pattern(self) -> str:
        """The glob of the files this source reads."""
        if self.options.get("dir"):
            return str(Path(self.options["dir"]) / self.options.get("glob", "*"))
        return str(self.options["path"])

    @property
    def folder(self) -> Path:
        """The watched folder (of ``dir``, or where the glob starts)."""
        if self.options.get("dir"):
            return Path(self.options["dir"])
        parts = Path(self.pattern).parts
        plain = [p for p in parts if not glob.has_magic(p)]
        return Path(*parts[: len(plain)]) if len(plain) < len(parts) else Path(self.pattern).parent

    @property
    def done_dir(self) -> Path:
        """Where loaded files go with ``after: move``."""
        return Path(self.options.get("done_dir") or self.folder / "done")

    @property
    def quarantine_dir(self) -> Path:
        """Where files that cannot be parsed go, each with a ``.reason`` file."""
        return Path(self.options.get("quarantine_dir") or self.folder / "quarantine")

    def paths(self) -> list[Path]:
        """The files the glob matches now (not in done/ or quarantine/), by name."""
        skip = {self.done_dir.absolute(), self.quarantine_dir.absolute()}
        found = []
        for name in sorted(glob.glob(self.pattern, recursive=True)):
            path = Path(name)
            if path.is_file() and not any(p in skip for p in path.absolute().parents):
                if not path.name.endswith(".reason"):
                    found.append(path)
        return found

    def format_of(self, name: str) -> str:
        """The format of a file: declared, else from its suffix, else CSV."""
        return self.options.get("format") or guess_format(name) or "csv"

    # -- fetch ------------------------------------------------------------------------------

    def settled(self, paths: list[Path]) -> list[Path]:
        """The files that have stopped growing: unchanged over the settle interval.

        Files older than the interval pass at once; if any is younger, wait once for
        the interval and keep those whose size and mtime did not move (a file still
        being written is picked up by a later run).
        """
        settle = seconds(self.options.get("settle", "1s"))
        stats = {}
        for path in paths:
            try:
                stats[path] = path.stat()
            except FileNotFoundError:
                continue
        young = [p for p, s in stats.items() if time.time() - s.st_mtime < settle]
        if young:
            time.sleep(settle)
        stable = []
        for path, before in stats.items():
            if path in young:
                try:
                    after = path.stat()
                except FileNotFoundError:
                    continue
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                    continue
            stable.append(path)
        return stable

    def fetch(self, cursor: Any) -> Iterator[Payload]:
        """Yield each settled file not loaded before, as read from disk."""
        seen = set((cursor or {}).get("seen", []))
        if self.options.get("after") == "move":
            self._move_loaded(seen)  # files whose load committed in an earlier run
        for path in self.settled(self.paths()):
            content = path.read_bytes()
            identity = file_identity(path, content)
            if identity in seen:
                continue
            fmt = self.format_of(path.name)
            yield Payload(
                content=content,
                name=str(path),
                media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"),
                meta={"identity": identity, "format": fmt},
            )

    # -- ingest -----------------------------------------------------------------------------

    def ingest(self, payload: Payload) -> pd.DataFrame:
        """The file's rows with the declared columns; an unparseable file is quarantined."""
        fmt = payload.meta.get("format") or self.format_of(payload.name)
        try:
            frame = parse_document(
                payload.content,
                fmt,
                records_path=self.options.get("records_path"),
                sheet=self.options.get("sheet"),
                delimiter=self.options.get("delimiter", ","),
            )
            return select_columns(frame, self.spec)
        except RecordError as exc:
            reason = f"{Path(payload.name).name}: {exc.message}"
            self.quarantine(payload, reason)
            raise PayloadQuarantined(reason, details={"file": payload.name}) from None

    def quarantine(self, payload: Payload, reason: str) -> Path | None:
        """Move the payload's file to the quarantine folder with a ``.reason`` file."""
        path = Path(payload.name)
        if not path.is_file() or file_identity(path, path.read_bytes()) != payload.meta.get(
            "identity"
        ):
            return None  # re-ingest from the archive: the file has already moved on
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = _unique_target(self.quarantine_dir, path.name)
        shutil.move(str(path), target)
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        return target

    # -- after the load ---------------------------------------------------------------------

    def next_cursor(self, cursor: Any, payloads: list[Payload]) -> Any:
        """Identities loaded so far, forgetting files that are gone from the folder."""
        present = {str(p.absolute()) for p in self.paths()}
        seen = [i for i in (cursor or {}).get("seen", []) if i.split("|", 1)[0] in present]
        seen.extend(p.meta["identity"] for p in payloads if "identity" in p.meta)
        return {"seen": seen}

    def after_load(self, payloads: list[Payload]) -> None:
        """Once the load committed: move the loaded files to done/ (``after: move``)."""
        if self.options.get("after") == "move":
            self._move_loaded({p.meta["identity"] for p in payloads if "identity" in p.meta})

    def _move_loaded(self, identities: set[str]) -> None:
        by_path = {i.split("|", 1)[0]: i for i in identities}
        for path in self.paths():
            identity = by_path.get(str(path.absolute()))
            if identity is None:
                continue
            try:
                if file_identity(path, path.read_bytes()) != identity:
                    continue  # rewritten since it was loaded: it is a new file
            except FileNotFoundError:
                continue
            self.done_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), _unique_target(self.done_dir, path.name))


class FolderWatchers:
    """The folders of every file source (``watch`` not false), polled by cxd-ingest.

    Each :meth:`sync` (the keeper calls it about every second) lists the files each source's
    glob matches and notes their size and modification time. A file that is new or changed,
    whose size and time did not move since the previous poll and that is older than the
    source's ``settle``, is *ready*; unless the source's cursor shows it loaded already, one
    run of the source is enqueued for the ready files (slot ``watch:<their digest>``, so two
    cxd-ingest processes watching one folder enqueue it once). The run itself keeps every
    rule of a scheduled one: identity by path, size, mtime and hash, quarantine, move/keep.
    """

    def __init__(self, stores):
        self.stores = stores
        self.last: dict[str, dict[str, tuple[int, int]]] = {}  # source -> path -> last stat
        self.handed: dict[str, dict[str, tuple[int, int]]] = {}  # stat a run was enqueued for
        self.failed: dict[str, str] = {}  # source -> the problem reported once

    def sync(self, specs) -> dict[str, int]:
        """Poll every watched folder; return the runs enqueued, by source."""
        wanted = {
            s.name: s for s in specs if s.type == "file" and s.options.get("watch", True) is True
        }
        for name in list(self.last):
            if name not in wanted:
                self.last.pop(name, None)
                self.handed.pop(name, None)
        enqueued = {}
        for name, spec in wanted.items():
            try:
                run_id = self.poll(spec)
            except Exception as exc:  # one bad folder must not stop the others
                if self.failed.get(name) != str(exc):
                    self.failed[name] = str(exc)
                    log.error("file source %s: watching its folder failed: %s", name, exc)
                continue
            self.failed.pop(name, None)
            if run_id is not None:
                enqueued[name] = run_id
        return enqueued

    def poll(self, spec) -> int | None:
        """Look at one source's folder; enqueue a run when files are ready (its id)."""
        from plugins.registry import plugin_for

        plugin = plugin_for(spec, self.stores.settings.plugin_dir)
        if not isinstance(plugin, FileSource):
            return None
        settle = seconds(plugin.options.get("settle", "1s"))
        now = time.time()
        current: dict[str, tuple[int, int]] = {}
        ready = []
        last = self.last.get(spec.name, {})
        handed = self.handed.setdefault(spec.name, {})
        for path in plugin.paths():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            key = str(path.absolute())
            current[key] = (stat.st_size, stat.st_mtime_ns)
            if handed.get(key) == current[key]:
                continue
            unchanged = last.get(key) == current[key] or key not in last
            if unchanged and now - stat.st_mtime >= settle:
                ready.append(key)
        self.last[spec.name] = current
        for key in list(handed):
            if key not in current:
                del handed[key]  # moved to done/ or quarantine/, or deleted
        if not ready:
            return None
        from batch.load import get_watermark

        cursor = get_watermark(self.stores.db, spec.name).get("cursor") or {}
        loaded = {tuple(i.split("|")[:3]) for i in cursor.get("seen", [])}
        fresh = []
        for key in ready:
            size, mtime = current[key]
            if (key, str(size), str(mtime)) in loaded:
                handed[key] = current[key]
            else:
                fresh.append(key)
        if not fresh or self._busy(spec.name):
            return None  # nothing new, or a run is on its way: look again next round
        from batch.jobs import enqueue_run

        digest = hashlib.sha256(
            json.dumps(sorted((k, current[k]) for k in fresh)).encode()
        ).hexdigest()[:20]
        run_id = enqueue_run(self.stores, spec.name, "incremental", slot=f"watch:{digest}")
        for key in fresh:
            handed[key] = current[key]
        if run_id is not None:
            log.info(
                "file source %s: %d new file(s); run %s enqueued", spec.name, len(fresh), run_id
            )
        return run_id

    def _busy(self, dataset: str) -> bool:
        row = self.stores.db.fetchone(
            "SELECT count(*) AS n FROM cxd.runs WHERE dataset = %s"
            " AND status IN ('queued', 'fetching', 'ingesting')",
            (dataset,),
        )
        return bool(row and row["n"])

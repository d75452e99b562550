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
        done_dir: data/weather/done    # default <dir>/done
        quarantine_dir: data/weather/bad   # default <dir>/quarantine

A file is identified by path, size, modification time and content hash; an identity
already loaded is never loaded again. A file that cannot be parsed is moved to the
quarantine folder next to a ``<name>.reason`` text file, the run records the reason,
and the other files still load.
"""

from __future__ import annotations

import glob
import hashlib
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

"""Local files: every file matching a glob is fetched once and parsed as CSV, JSON or NDJSON."""

from __future__ import annotations

import glob
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from plugins.base import Payload, SourcePlugin

FORMATS = ("csv", "json", "ndjson")


class FileSource(SourcePlugin):
    """Files matching ``options.path`` (a glob); each file is loaded once, identified by
    path, size, modification time and content hash."""

    type = "file"

    def validate(self) -> list[str]:
        problems = []
        if not self.options.get("path"):
            problems.append("options.path is required (a file or a glob like data/*.csv)")
        fmt = self.options.get("format", "csv")
        if fmt not in FORMATS:
            problems.append(f"options.format {fmt!r} is not one of {', '.join(FORMATS)}")
        return problems

    def paths(self) -> list[Path]:
        """The files the glob matches now, oldest name first."""
        return [Path(p) for p in sorted(glob.glob(str(self.options["path"]))) if Path(p).is_file()]

    def fetch(self, cursor: Any) -> Iterator[Payload]:
        seen = set((cursor or {}).get("seen", []))
        for path in self.paths():
            content = path.read_bytes()
            stat = path.stat()
            identity = f"{path.absolute()}|{stat.st_size}|{stat.st_mtime_ns}|{hashlib.sha256(content).hexdigest()}"
            if identity in seen:
                continue
            yield Payload(
                content=content, name=str(path), media_type="text/csv", meta={"identity": identity}
            )

    def ingest(self, payload: Payload) -> pd.DataFrame:
        fmt = self.options.get("format", "csv")
        names = self.spec.column_names
        if fmt == "csv":
            frame = pd.read_csv(io.BytesIO(payload.content), dtype=str, keep_default_na=False)
        elif fmt == "json":
            frame = pd.DataFrame(json.loads(payload.content))
        else:
            lines = payload.content.decode().splitlines()
            frame = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ValueError(f"{payload.name}: missing column(s) {', '.join(missing)}")
        return frame[names]

    def next_cursor(self, cursor: Any, payloads: list[Payload]) -> Any:
        seen = list((cursor or {}).get("seen", []))
        seen.extend(p.meta["identity"] for p in payloads)
        return {"seen": seen}

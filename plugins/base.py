"""The base class of every source.

A source is one class with two phases:

``fetch(cursor)``
    I/O only: gather what is new since ``cursor`` (or receive it) and yield
    :class:`Payload` objects exactly as received. The runtime archives each payload
    before anything else happens, so ingest can be re-run later without the source.

``ingest(payload)``
    Clean and type one payload: return a pandas DataFrame or a list of dicts whose
    keys are the dataset's declared columns, or yield several DataFrames (chunks) so a
    large payload never sits in memory whole (``pd.read_csv(..., chunksize=50_000)``).

and a declared dataset (name, kind, typed columns, key, time column), a schedule or
the resident flag, and optional checks. Everything else (staging, typing, dedup,
watermarks, retries) is the engine's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from cxd.catalog import SourceSpec


@dataclass
class Payload:
    """One unit of fetched data, exactly as received, plus where it came from."""

    content: bytes
    name: str = ""
    media_type: str = "application/octet-stream"
    meta: dict[str, Any] = field(default_factory=dict)


class SourcePlugin:
    """Subclass this (or a built-in like ``FileSource``) to add a source.

    Override :meth:`fetch` and :meth:`ingest`; optionally :meth:`validate` to report
    bad settings (all at once) and :meth:`next_cursor` to move the incremental cursor.
    ``self.spec`` is the declared source, ``self.options`` its options and
    ``self.secrets`` its secrets (never log them).
    """

    #: the ``type:`` this class serves in ``cxd.yml`` (built-ins: odbc, http, webhook, file, mqtt)
    type: ClassVar[str] = "python"
    #: resident plugins run inside cxd-ingest (webhook receiver, MQTT subscriber, watcher)
    resident: ClassVar[bool] = False

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.options = dict(spec.options)
        self.secrets = dict(spec.secrets)

    def validate(self) -> list[str]:
        """Every problem with the settings, as readable sentences (empty when fine)."""
        return []

    def fetch(self, cursor: Any) -> Iterator[Payload]:
        """Yield the payloads that are new since ``cursor`` (I/O only, no parsing)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fetch()")

    def fetch_range(self, start: datetime, end: datetime) -> Iterator[Payload]:
        """Yield payloads covering ``[start, end)`` of the time column, for a backfill.

        The default fetches everything (as a full refresh does); the engine keeps only
        rows inside the range. Override it when the source can filter by time.
        """
        return self.fetch(None)

    def ingest(
        self, payload: Payload
    ) -> pd.DataFrame | list[dict[str, Any]] | Iterable[pd.DataFrame]:
        """Turn one payload into rows with the dataset's declared columns (or chunks of them)."""
        raise NotImplementedError(f"{type(self).__name__} must implement ingest()")

    def next_cursor(self, cursor: Any, payloads: list[Payload]) -> Any:
        """The cursor after a load of ``payloads`` commits (default: unchanged)."""
        return cursor

    def after_load(self, payloads: list[Payload]) -> None:
        """Called once the load of ``payloads`` has committed (e.g. move files to done/)."""

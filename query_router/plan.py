"""The plan object the router's passes read and refine, one pass at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp

from cxd.catalog import SourceSpec


@dataclass
class Bound:
    """One end of a time range: a value and whether the end itself is included."""

    value: Any
    inclusive: bool = True


@dataclass
class Frontier:
    """What raw held for one dataset in a past snapshot, as this process last read it."""

    watermark: str  # W in that snapshot
    max_time: Any  # newest time-column value in raw then (None: no row had one)
    taken: float  # time.monotonic() just before the snapshot was taken
    announced: tuple[int, int]  # cache.announced() just before the snapshot


@dataclass
class SpeedView:
    """What the speed layer held for one dataset when the router read it (Redis first)."""

    high_water: str = "0-0"
    entries: list[tuple[str, dict]] = field(
        default_factory=list
    )  # (stream id, record) above a past W
    latest: list[dict] | None = None  # instantaneous datasets: the latest value per entity
    min_time: Any = None  # earliest time-column value among the entries (None: unknown)
    ids: list[tuple[int, int]] = field(default_factory=list)  # entries' ids, parsed
    times: list[Any] = field(default_factory=list)  # entries' time-column values, parsed
    # set when the entries hold every event raw gained since ``frontier`` (see choose_layer)
    frontier: Frontier | None = None
    no_frontier: str = ""  # why ``frontier`` is None, for plan notes


@dataclass
class Plan:
    """Everything known about one query on its way from text to execution."""

    sql: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # now() of the query
    expression: exp.Expression | None = None
    logical: exp.Expression | None = None  # the bound query before datasets were rewritten
    params: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # the caller's raw parameter values
    bound: dict[str, Any] = field(default_factory=dict)  # values coerced to declared types
    datasets: dict[str, SourceSpec] = field(default_factory=dict)
    # dataset -> (lower, upper) bounds on its time column (None: unbounded)
    bounds: dict[str, tuple[Bound | None, Bound | None]] = field(default_factory=dict)
    # dataset -> {column: allowed values} from ``column = value`` filters on every reference
    equalities: dict[str, dict[str, set]] = field(default_factory=dict)
    speed: dict[str, SpeedView] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)  # dataset -> batch | speed | merge
    positional: list[str] = field(default_factory=list)  # driver parameter order ($1, $2, ...)
    notes: list[str] = field(default_factory=list)
    extra_columns: dict[str, list[str]] = field(default_factory=dict)  # e.g. _valid_from

    sql_text: str | None = None  # ``expression`` as Postgres SQL, once generated

    def text(self) -> str:
        """The rewritten query as Postgres SQL (generated once)."""
        if self.sql_text is None:
            self.sql_text = self.expression.sql(dialect="postgres")
        return self.sql_text

    @property
    def layer(self) -> str:
        """The plan as one word: batch, speed or merge."""
        kinds = set(self.layers.values())
        if not kinds or kinds == {"batch"}:
            return "batch"
        if kinds == {"speed"}:
            return "speed"
        return "merge"

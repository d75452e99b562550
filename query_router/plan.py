"""The plan object the router's passes read and refine, one pass at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from cxd.catalog import SourceSpec


@dataclass
class Plan:
    """Everything known about one query on its way from text to execution."""

    sql: str
    expression: exp.Expression | None = None
    params: list[dict[str, Any]] = field(default_factory=list)
    datasets: dict[str, SourceSpec] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)  # dataset -> batch | speed | merge
    notes: list[str] = field(default_factory=list)

    @property
    def layer(self) -> str:
        """The plan as one word: batch, speed or merge."""
        kinds = set(self.layers.values())
        if not kinds:
            return "batch"
        if kinds == {"batch"}:
            return "batch"
        if kinds == {"speed"}:
            return "speed"
        return "merge"

"""Checks of option values shared by the built-in sources' ``validate``."""

from __future__ import annotations

from typing import Any

from plugins.parse import seconds


def duration_problems(options: dict[str, Any], *names: str) -> list[str]:
    """A sentence for each of ``names`` that is set but is not a duration."""
    problems = []
    for name in names:
        try:
            seconds(options.get(name, 0))
        except ValueError as exc:
            problems.append(f"options.{name}: {exc}")
    return problems


def count_problems(options: dict[str, Any], name: str, default: int, minimum: int) -> list[str]:
    """A sentence if option ``name`` is not a whole number of at least ``minimum``."""
    try:
        if int(options.get(name, default)) < minimum:
            return [f"options.{name} must be at least {minimum}"]
    except (TypeError, ValueError):
        return [f"options.{name} {options.get(name)!r} is not a number"]
    return []

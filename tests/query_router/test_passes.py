"""Each planning pass against its fixture file of input SQL and expected output, like
sqlglot's optimizer tests. Passes are pure: a fixed catalog and speed view, no stores."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import pytest

from cxd.catalog import parse_source
from cxd.errors import CxdError
from query_router.bind_params import bind_params, check_declarations
from query_router.choose_layer import choose_layer
from query_router.extract_time_bounds import extract_time_bounds
from query_router.plan import Plan, SpeedView
from query_router.resolve_datasets import resolve_datasets
from query_router.rewrite_merge import rewrite_merge
from query_router.validate import validate
from tests.query_router.conftest import FIXTURES, LEVELS, SITES, WEATHER

CATALOG = {s["name"]: parse_source(s) for s in (WEATHER, LEVELS, SITES)}
PARAMS = check_declarations(
    [
        {"name": "lo", "type": "timestamptz"},
        {"name": "hi", "type": "timestamptz"},
        {"name": "n", "type": "integer"},
        {"name": "name", "type": "text"},
    ]
)
VALUES = {"lo": "2026-05-05T10:00:00Z", "hi": "2026-05-05T12:00:00Z", "n": 3, "name": "x"}


def fixed_speed(plan: Plan) -> Plan:
    """Stand-in for read_speed: weather events from 11:00 on, levels' latest values."""
    views = {
        "weather": SpeedView(
            high_water="2-0",
            entries=[("1-0", {}), ("2-0", {})],
            min_time=datetime(2026, 5, 5, 11, tzinfo=UTC),
        ),
        "levels": SpeedView(high_water="1-0", entries=[("1-0", {})], latest=[{"station": "S1"}]),
    }
    plan.speed = {name: views.get(name, SpeedView()) for name in plan.datasets}
    return plan


RULES = [
    ("validate", validate),
    ("resolve_datasets", partial(resolve_datasets, catalog=CATALOG)),
    ("extract_time_bounds", extract_time_bounds),
    ("read_speed", fixed_speed),
    ("choose_layer", choose_layer),
    ("bind_params", bind_params),
    ("rewrite_merge", rewrite_merge),
]


def _end(bound, lower: bool) -> str:
    if bound is None:
        return "(-inf" if lower else "+inf)"
    text = bound.value.isoformat()
    if lower:
        return ("[" if bound.inclusive else "(") + text
    return text + ("]" if bound.inclusive else ")")


def render(name: str, plan: Plan) -> str:
    if name == "validate":
        return "ok"
    if name == "resolve_datasets":
        return ", ".join(sorted(plan.datasets)) or "(none)"
    if name == "extract_time_bounds":
        lower, upper = plan.bounds.get("weather", (None, None))
        return f"weather: {_end(lower, True)}, {_end(upper, False)}"
    if name == "choose_layer":
        return ", ".join(f"{d}: {layer}" for d, layer in sorted(plan.layers.items()))
    return plan.expression.sql(dialect="postgres")


def cases(name: str) -> list[tuple[str, str]]:
    text = (FIXTURES / "passes" / f"{name}.sql").read_text()
    out = []
    for block in text.split("\n----\n")[1:]:
        given, _, expected = block.partition("\n=> ")
        out.append((given.strip(), expected.strip()))
    return out


ALL = [
    (name, given, want) for name, _ in RULES if name != "read_speed" for given, want in cases(name)
]


@pytest.mark.parametrize(
    ("name", "given", "want"), ALL, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(ALL)]
)
def test_pass(name, given, want):
    plan = Plan(sql=given, params=PARAMS, values=dict(VALUES))
    try:
        for rule_name, rule in RULES:
            plan = rule(plan)
            if rule_name == name:
                break
    except CxdError as exc:
        assert exc.message.startswith(want), exc.message
        return
    assert render(name, plan) == want

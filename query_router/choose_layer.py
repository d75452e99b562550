"""Pass 3: decide per dataset whether the answer needs batch rows, speed rows or both."""

from __future__ import annotations

from query_router.plan import Plan

LIVE_TYPES = ("webhook", "mqtt")


def choose_layer(plan: Plan) -> Plan:
    """Live-fed datasets are merged (raw + events above W); pull sources are batch only."""
    for name, spec in plan.datasets.items():
        live = spec.type in LIVE_TYPES or bool(spec.speed)
        plan.layers[name] = "merge" if live else "batch"
        plan.notes.append(
            f"{name}: {plan.layers[name]} ({'live source' if live else 'pull source'})"
        )
    return plan

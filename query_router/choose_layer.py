"""Pass 4: decide per dataset whether the answer needs batch rows, speed rows or both.

- **batch**: a pull source, no event above the watermark, or a time range that ends
  before the earliest event the speed layer holds (those events cannot change it);
- **speed**: an instantaneous live dataset (its latest value per entity is in Redis);
- **merge**: everything else: raw rows plus the speed rows above the watermark W.
"""

from __future__ import annotations

from query_router.plan import Plan


def _before_speed(upper, min_time) -> bool:
    """True when every speed event lies after the range's upper bound."""
    if upper is None or min_time is None:
        return False
    return min_time > upper.value or (min_time == upper.value and not upper.inclusive)


def choose_layer(plan: Plan) -> Plan:
    """Set ``plan.layers[dataset]`` and explain each decision in ``plan.notes``."""
    for name, spec in plan.datasets.items():
        view = plan.speed.get(name)
        if view is not None and spec.kind == "instantaneous" and view.latest:
            layer, why = "speed", f"instantaneous: {len(view.latest)} latest values in Redis"
        elif view is None or not view.entries:
            layer, why = "batch", "no events above the watermark in the speed layer"
        elif _before_speed(plan.bounds.get(name, (None, None))[1], view.min_time):
            upper = plan.bounds[name][1]
            layer = "batch"
            why = (
                f"range ends at {upper.value.isoformat()}, before the earliest speed event"
                f" ({view.min_time.isoformat()})"
            )
        else:
            layer = "merge"
            why = f"raw rows plus up to {len(view.entries)} speed events above the watermark"
        plan.layers[name] = layer
        plan.notes.append(f"{name}: {layer} ({why})")
    return plan

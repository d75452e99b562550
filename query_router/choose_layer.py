"""Pass 4: decide per dataset whether the answer needs batch rows, speed rows or both.

- **batch**: a pull source, no event above the watermark, or a time range that ends
  before the earliest event the speed layer holds (those events cannot change it);
- **speed**: an instantaneous live dataset (its latest value per entity is in Redis), or a
  live window: a range that starts after raw's newest time (see :func:`_live_window`);
- **merge**: everything else: raw rows plus the speed rows above the watermark W.
"""

from __future__ import annotations

from query_router.plan import Plan


def _before_speed(upper, min_time) -> bool:
    """True when every speed event lies after the range's upper bound."""
    if upper is None or min_time is None:
        return False
    return min_time > upper.value or (min_time == upper.value and not upper.inclusive)


def _live_window(plan: Plan, name: str) -> str | None:
    """Why the range read from ``name`` holds speed events only, or None.

    Exact when the range starts after the newest time raw held in a snapshot S (the
    frontier) and the speed layer holds every event raw gained since S: every event above
    S's watermark was read from the stream (no trimmed gap since), and no batch load was
    announced since S (loads that bypass the stream announce themselves). Raw then has no
    row in the range but those events, which the speed rows already hold.
    """
    view = plan.speed.get(name)
    lower = plan.bounds.get(name, (None, None))[0]
    if view is None or view.frontier is None or lower is None:
        return None
    newest = view.frontier.max_time
    if newest is not None and (newest > lower.value or (newest == lower.value and lower.inclusive)):
        view.no_frontier = f"raw holds rows up to {newest.isoformat()}, inside the range"
        return None
    return (
        f"range starts at {lower.value.isoformat()}, after raw's newest time"
        f" ({newest.isoformat() if newest else 'no rows'}, watermark {view.frontier.watermark});"
        f" {len(view.entries)} speed events hold every event since"
    )


def choose_layer(plan: Plan) -> Plan:
    """Set ``plan.layers[dataset]`` and explain each decision in ``plan.notes``."""
    for name, spec in plan.datasets.items():
        view = plan.speed.get(name)
        if view is not None and spec.kind == "instantaneous" and view.latest:
            layer, why = "speed", f"instantaneous: {len(view.latest)} latest values in Redis"
        elif window := _live_window(plan, name):
            layer, why = "speed", f"live window: {window}"
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
            if view.no_frontier:
                why += f"; not a live window: {view.no_frontier}"
        plan.layers[name] = layer
        plan.notes.append(f"{name}: {layer} ({why})")
    return plan

"""``/metrics`` in the Prometheus text format: requests by route and status, request
latency, runs by status and the speed-layer backlog of every dataset.

Request figures are counted in this process (cxd-server runs one gunicorn worker with
many threads by default); run and backlog figures are read from the stores at scrape time.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

from flask import Blueprint, Flask, Response, g, request

from batch.runs import STATUSES
from cxd.catalog import list_sources
from serving.auth import needs
from speed.stream import backlog

metrics_api = Blueprint("metrics", __name__)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestStats:
    """Thread-safe request counters and a latency histogram per route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: dict[tuple[str, str, str], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.total: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            self.count[(route, method, str(status))] += 1
            counts = self.buckets.setdefault((route, method), [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.total[(route, method)] += seconds

    def lines(self) -> list[str]:
        """The counters in the Prometheus text format."""
        out = [
            "# HELP cxd_http_requests_total HTTP requests answered, by route, method and status.",
            "# TYPE cxd_http_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), n in sorted(self.count.items()):
                out.append(
                    f"cxd_http_requests_total{labels(route=route, method=method, status=status)} {n}"
                )
            out += [
                "# HELP cxd_http_request_duration_seconds Time to answer an HTTP request.",
                "# TYPE cxd_http_request_duration_seconds histogram",
            ]
            for (route, method), counts in sorted(self.buckets.items()):
                running = 0
                for bound, n in zip((*BUCKETS, "+Inf"), counts, strict=True):
                    running += n
                    le = bound if bound == "+Inf" else repr(bound)
                    out.append(
                        "cxd_http_request_duration_seconds_bucket"
                        f"{labels(route=route, method=method, le=le)} {running}"
                    )
                out.append(
                    f"cxd_http_request_duration_seconds_sum{labels(route=route, method=method)}"
                    f" {self.total[(route, method)]:.6f}"
                )
                out.append(
                    f"cxd_http_request_duration_seconds_count{labels(route=route, method=method)}"
                    f" {running}"
                )
        return out


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**values: object) -> str:
    """``{name="value",...}`` with Prometheus escaping."""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in values.items()) + "}"


def init_app(app: Flask) -> None:
    """Time every request of ``app`` and serve ``/metrics``."""
    stats = RequestStats()
    app.extensions["cxd.metrics"] = stats

    @app.before_request
    def start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response: Response):
        started = g.get("metrics_started")
        if started is not None:
            # the rule, not the path: /api/queries/<name> stays one series however many names
            route = request.url_rule.rule if request.url_rule else "unmatched"
            stats.observe(
                route, request.method, response.status_code, time.perf_counter() - started
            )
        return response

    app.register_blueprint(metrics_api)


@metrics_api.get("/metrics")
@needs("read")
def metrics():
    """Prometheus scrape endpoint."""
    from flask import current_app

    stores = current_app.extensions["cxd.stores"]
    out = current_app.extensions["cxd.metrics"].lines()
    out += ["# HELP cxd_runs Runs by status.", "# TYPE cxd_runs gauge"]
    by_status = {s: 0 for s in STATUSES}
    for row in stores.db.fetchall("SELECT status, count(*) AS n FROM cxd.runs GROUP BY status"):
        by_status[row["status"]] = int(row["n"])
    out += [f"cxd_runs{labels(status=s)} {n}" for s, n in by_status.items()]
    out += [
        "# HELP cxd_speed_backlog Events in the speed layer's stream of a dataset (not yet trimmed).",
        "# TYPE cxd_speed_backlog gauge",
    ]
    out += [
        f"cxd_speed_backlog{labels(dataset=s.name)} {backlog(stores.redis, s.name)}"
        for s in list_sources(stores.db)
    ]
    return Response("\n".join(out) + "\n", content_type=CONTENT_TYPE)

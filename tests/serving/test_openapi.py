# ruff: noqa: F811  (pytest fixtures imported from tests.serving.rest_fixtures)
"""The OpenAPI document covers every REST route, and Schemathesis finds no server error and
no response that differs from it, against a real server."""

from __future__ import annotations

import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.exceptions import MethodNotAllowed, NotFound

from batch.jobs import enqueue_run
from cxd.auth import create_token
from query_router.saved import save_query
from serving import openapi
from speed.stream import append
from tests.serving.rest_fixtures import TEMPS, datasets, live_server  # noqa: F401

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def documented(doc: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }


def test_every_route_the_server_answers_is_documented(app, client, auth):
    r = client.get("/api/openapi.json", headers=auth("read"))
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"].startswith("3.")
    served = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if (rule.rule.startswith("/api/") or rule.rule == "/metrics") and not rule.websocket
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    missing = served - documented(doc)
    assert not missing, f"routes the server answers but the document lacks: {sorted(missing)}"
    # and every route of the contract is in the document (served here or by another blueprint)
    contract = {
        ("POST", "/api/sources"), ("GET", "/api/sources"), ("GET", "/api/sources/{name}"),
        ("PUT", "/api/sources/{name}"), ("DELETE", "/api/sources/{name}"),
        ("POST", "/api/sources/{name}/runs"), ("GET", "/api/runs/{run_id}"), ("GET", "/api/runs"),
        ("GET", "/api/datasets"), ("GET", "/api/datasets/{name}"),
        ("GET", "/api/datasets/{name}/changes"), ("GET", "/api/datasets/{name}/latest"),
        ("POST", "/api/queries"), ("GET", "/api/queries/{name}/results"),
        ("GET", "/api/queries/{name}/plan"), ("POST", "/api/sql"), ("GET", "/api/openapi.json"),
        ("GET", "/metrics"), ("GET", "/api/health"), ("PUT", "/api/queries/{name}"),
        ("DELETE", "/api/queries/{name}"),
    }  # fmt: skip
    assert contract <= documented(doc)
    assert client.get("/api/openapi.json").status_code == 401


def served(app, method: str, path: str) -> bool:
    """Whether the app has a route for ``method`` on the templated ``path``."""
    concrete = re.sub(r"\{\w+\}", "1", path)
    try:
        app.url_map.bind("localhost").match(concrete, method=method.upper())
    except NotFound:
        return False
    except MethodNotAllowed:
        return False
    return True


@pytest.fixture
def admin_headers(datasets):
    return {"Authorization": f"Bearer {create_token(datasets.db, 'admin')}"}


@pytest.fixture
def api_data(datasets):
    """Data that makes 200s possible: two datasets, live events, a saved query, a run."""
    append(
        datasets.redis,
        "weather",
        [{"origin": "EWR", "time_hour": "2026-05-05T10:00:00Z", "temp": 5.5}],
    )
    append(datasets.redis, "levels", [{"gauge": "g1", "level": 2.5}], key_columns=["gauge"])
    save_query(datasets, TEMPS)
    enqueue_run(datasets, "weather")
    return datasets


# the document as the package builds it; the test below checks the server serves the same
schema = schemathesis.openapi.from_dict(openapi.document())


def test_the_server_serves_the_document(live_server, admin_headers):
    served = requests.get(f"{live_server}/api/openapi.json", headers=admin_headers, timeout=30)
    assert served.json() == openapi.document(f"{live_server}/")


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_responses_match_the_document(case, app, api_data, live_server, admin_headers):
    if not served(app, case.operation.method, case.operation.path):
        pytest.skip(f"{case.operation.label} is served by a blueprint not in this build")
    case.call_and_validate(base_url=live_server, headers=admin_headers, checks=CHECKS, timeout=30)


def test_documented_examples_answer_200(datasets, live_server, admin_headers):
    """The document's examples name the fixture's dataset and query, so Schemathesis's
    explicit phase reaches the 200 answers too, not only the 404s of random names."""
    save_query(datasets, TEMPS)
    doc = requests.get(f"{live_server}/api/openapi.json", headers=admin_headers, timeout=30).json()
    for path in ("/api/datasets/{name}", "/api/datasets/{name}/latest", "/api/queries/{name}"):
        example = next(
            p["example"] for p in doc["paths"][path]["parameters"] if p["name"] == "name"
        )
        url = live_server + path.replace("{name}", example)
        assert requests.get(url, headers=admin_headers, timeout=30).status_code == 200, url

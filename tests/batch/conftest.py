"""Fixtures of the batch tests: declare sources (file or a python plugin written to the
test's plugin folder) and run them in this process or through a real rq worker."""

from __future__ import annotations

import textwrap

import pytest

from batch.jobs import execute_run
from batch.runs import create_run
from tests.helpers import declare_source


@pytest.fixture
def declare(stores):
    """Store a source declared as a dict and create its tables; return its spec."""

    def make(**body):
        return declare_source(stores, body)

    return make


@pytest.fixture
def plugin_file(settings):
    """Write a python plugin ``name`` (source text) into the test's plugin folder."""

    def write(name: str, source: str) -> None:
        settings.plugin_dir.mkdir(parents=True, exist_ok=True)
        (settings.plugin_dir / f"{name}.py").write_text(textwrap.dedent(source))
        from plugins import registry

        registry._loaded.clear()  # pick up the new or changed file

    return write


@pytest.fixture
def run_now(stores):
    """Run a dataset now in this process: ``run_now("ds", "full")`` -> the run record."""

    def run(dataset: str, mode: str = "incremental", params: dict | None = None) -> dict:
        run_id = create_run(stores.db, dataset, mode, params=params)
        return execute_run(stores, run_id)

    return run


@pytest.fixture
def rows(stores):
    """Rows of a query as a list of tuples."""

    def fetch(query: str, params=None) -> list[tuple]:
        return [tuple(r.values()) for r in stores.db.fetchall(query, params)]

    return fetch

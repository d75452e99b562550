"""Pages: a named group of saved queries sharing inputs (say machine and shift), pushed
together over ``/ws`` like a dashboard page."""

from __future__ import annotations

import json
import re
from typing import Any

from cxd.errors import BadInput, NotFound
from cxd.stores import Stores
from query_router import saved as saved_queries

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_page(stores: Stores, body: Any) -> dict[str, Any]:
    """Check a page body ``{"name", "queries": [names], "inputs": [{"name", "type"}]}``.

    Every problem is reported at once; each query must exist, and each of its parameters
    without a default must be one of the page's inputs.
    """
    if not isinstance(body, dict):
        raise BadInput('a page is a JSON object {"name", "queries", "inputs"}')
    problems = []
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("name: lower-case letters, digits and _ starting with a letter")
    queries = body.get("queries")
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) for q in queries):
        problems.append("queries: a non-empty list of saved query names")
        queries = []
    inputs = body.get("inputs") or []
    if not isinstance(inputs, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) for i in inputs
    ):
        problems.append("inputs: a list of {name, type}")
        inputs = []
    names = {i["name"] for i in inputs}
    for qname in queries:
        if not NAME.match(qname):
            problems.append(f"queries: {qname[:40]!r} is not a saved query name")
            continue
        try:
            q = saved_queries.get_query(stores, qname)
        except NotFound:
            problems.append(f"queries: no saved query named {qname!r}")
            continue
        for p in q["params"]:
            if p["name"] not in names and "default" not in p:
                problems.append(f"inputs: query {qname!r} needs input {p['name']!r}")
    if problems:
        raise BadInput("; ".join(problems), details={"problems": problems})
    return {"name": name, "queries": queries, "inputs": inputs}


def save_page(stores: Stores, body: Any) -> dict[str, Any]:
    """Check and store (insert or replace) a page."""
    page = check_page(stores, body)
    stores.db.execute(
        "INSERT INTO cxd.pages (name, queries, inputs) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET queries = EXCLUDED.queries,"
        " inputs = EXCLUDED.inputs, updated_at = now()",
        (page["name"], json.dumps(page["queries"]), json.dumps(page["inputs"])),
    )
    return page


def get_page(stores: Stores, name: str) -> dict[str, Any]:
    """A page by name."""
    row = stores.db.fetchone("SELECT name, queries, inputs FROM cxd.pages WHERE name = %s", (name,))
    if row is None:
        raise NotFound(f"no page named {name!r}")
    return row


def list_pages(stores: Stores) -> list[dict[str, Any]]:
    """Every page."""
    return stores.db.fetchall("SELECT name, queries, inputs FROM cxd.pages ORDER BY name")


def delete_page(stores: Stores, name: str) -> None:
    """Delete a page; NotFound if there is none."""
    get_page(stores, name)
    stores.db.execute("DELETE FROM cxd.pages WHERE name = %s", (name,))

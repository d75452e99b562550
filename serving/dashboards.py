"""Dashboard pages in the browser: ``/dashboards/<page>`` shows a saved page (a group of
saved queries sharing inputs) and follows it live over the ``/ws`` page subscription.

Each output is drawn by its shape: one value is a card, a label column with one number
column is a bar chart, anything else a table.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from query_router.saved import get_query
from serving.auth import needs, request_token

dashboards = Blueprint("dashboards", __name__)


@dashboards.get("/dashboards/<name>")
@needs("read")
def show(name: str):
    """The page's inputs and outputs; the browser subscribes with the same token."""
    from serving.pages import get_page

    stores = current_app.extensions["cxd.stores"]
    page = get_page(stores, name)
    outputs = []
    for qname in page["queries"]:
        q = get_query(stores, qname)
        outputs.append({"name": qname, "outputs": q["outputs"]})
    return render_template(
        "dashboard.html", page=page, outputs=outputs, token=request_token() or ""
    )

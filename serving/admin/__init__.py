"""The operator console at ``/admin``: server-rendered pages over the same stores the API uses.

Pages live in :mod:`serving.admin.pages` and :mod:`serving.admin.queries`; what they show
is read in :mod:`serving.admin.state`; actions call the batch layer through
:mod:`serving.admin.actions`; sessions and CSRF are in :mod:`serving.admin.session`.
"""

from __future__ import annotations

from flask import Blueprint

admin = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    static_folder="../static",
    static_url_path="/static",
)

from serving.admin import pages, queries  # noqa: E402,F401  (routes register on import)

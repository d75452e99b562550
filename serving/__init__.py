"""Serving layer: the Flask app factory behind cxd-server (REST, GraphQL, websockets, console)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from cxd import web
from cxd.config import load_settings
from cxd.stores import Stores, open_stores


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the cxd-server app; ``config["CXD_STORES"]`` may hand in open Stores (tests)."""
    app = Flask(__name__)
    app.config.update(config or {})
    stores: Stores | None = app.config.get("CXD_STORES")
    if stores is None:
        stores = open_stores(load_settings(), application_name="cxd-server")
    app.extensions["cxd.stores"] = stores
    web.install(app)

    from serving.admin import admin
    from serving.api import api
    from serving.dashboards import dashboards
    from serving.sources import sources_api

    app.register_blueprint(api)
    app.register_blueprint(sources_api)
    app.register_blueprint(dashboards)
    app.register_blueprint(admin)

    from serving.changes import changes_api
    from serving.ws import live_api, sock

    app.register_blueprint(changes_api)
    app.register_blueprint(live_api)
    sock.init_app(app)

    from serving import graphql, metrics, openapi

    metrics.init_app(app)
    graphql.init_app(app)
    app.register_blueprint(openapi.openapi_api)
    return app

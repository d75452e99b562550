"""cxd-ingest: registers sources and their schedules, hosts resident plugins (the webhook
receiver on CXD_INGEST_PORT) and keeps schedules registered."""

from __future__ import annotations

import logging
import os
import sys
import threading

from flask import Flask

from cxd import logs, web
from cxd.config import Settings, load_settings
from cxd.errors import ConfigError
from cxd.stores import open_stores

log = logging.getLogger(__name__)
KEEPER_INTERVAL = 1.0


def create_ingest_app(config: dict | None = None) -> Flask:
    """The resident plugins' HTTP app (webhook receiver)."""
    app = Flask("cxd.ingest")
    app.config.update(config or {})
    stores = app.config.get("CXD_STORES") or open_stores(
        load_settings(), application_name="cxd-ingest"
    )
    app.extensions["cxd.stores"] = stores
    web.install(app)
    from plugins.webhook import hooks

    app.register_blueprint(hooks)
    return app


def keeper(settings: Settings, stop: threading.Event) -> None:
    """Background duties: keep schedules registered and hand live events to batch."""
    from batch.jobs import RECOVER_EVERY, recover
    from batch.schedule import register_schedules
    from cxd.catalog import list_sources
    from speed.loader import drain

    stores = open_stores(settings, application_name="cxd-ingest-keeper")
    rounds = 0
    while not stop.is_set():
        rounds += 1
        try:
            if rounds % RECOVER_EVERY == 1:
                recover(stores)  # runs whose worker died mid-run are enqueued again
            specs = list_sources(stores.db)
            register_schedules(stores, specs)
            for spec in specs:
                if spec.type in ("webhook", "mqtt"):
                    drain(stores, spec.name)
        except Exception:
            log.exception("ingest keeper round failed; retrying")
        stop.wait(KEEPER_INTERVAL)


def main() -> None:
    """Entry point of ``cxd-ingest``."""
    try:
        settings = load_settings()
        logs.setup(settings.log_level, "cxd-ingest")
        from cxd.bootstrap import prepare, sync_config

        settings = prepare(settings)
        specs = sync_config(settings)
    except ConfigError as exc:
        sys.exit(f"cxd-ingest: {exc.message}")
    os.environ["CXD_DATABASE_URL"] = settings.database_url
    os.environ["CXD_REDIS_URL"] = settings.redis_url
    log.info("%d source(s) declared in %s", len(specs), settings.config_file)

    def post_worker_init(worker):
        threading.Thread(target=keeper, args=(settings, threading.Event()), daemon=True).start()

    from cxd.httpserver import serve

    print(
        f"cxd-ingest listening on http://{settings.host}:{settings.ingest_port}/hooks/<dataset>",
        flush=True,
    )
    serve(create_ingest_app, settings.host, settings.ingest_port, post_worker_init=post_worker_init)


if __name__ == "__main__":
    main()

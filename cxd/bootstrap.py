"""Start-up shared by every process: resolve store URLs, migrate, sync declared sources."""

from __future__ import annotations

import logging

from cxd.config import Settings
from cxd.stores import Database, open_stores, resolve_urls

log = logging.getLogger(__name__)


def prepare(settings: Settings) -> Settings:
    """Start embedded stores if needed and bring the metadata schema up to date."""
    settings = resolve_urls(settings)
    from cxd.migrations import migrate

    db = Database(settings.database_url, maxconn=2, application_name="cxd-migrate")
    try:
        migrate(db)
    finally:
        db.close()
    return settings


def sync_config(settings: Settings):
    """Store every source declared in CXD_CONFIG and create its tables; return the specs."""
    from batch.tables import register_dataset
    from cxd.catalog import load_config, save_source

    specs = load_config(settings.config_file)
    stores = open_stores(settings, application_name="cxd-sync")
    try:
        for spec in specs:
            save_source(stores.db, spec, origin="yaml")
            register_dataset(stores.db, spec)
    finally:
        stores.close()
    return specs

"""cxd-server: the serving layer (REST, GraphQL, websockets, console) under gunicorn."""

from __future__ import annotations

import os
import sys

from cxd import logs
from cxd.config import load_settings
from cxd.errors import ConfigError


def main() -> None:
    """Entry point of ``cxd-server``."""
    try:
        settings = load_settings()
        logs.setup(settings.log_level, "cxd-server")
        from cxd.bootstrap import prepare

        settings = prepare(settings)
        from cxd.httpserver import web_threads

        threads = web_threads()
    except ConfigError as exc:
        sys.exit(f"cxd-server: {exc.message}")
    os.environ["CXD_DATABASE_URL"] = settings.database_url
    os.environ["CXD_REDIS_URL"] = settings.redis_url
    from cxd.httpserver import serve
    from serving import create_app

    print(f"cxd-server listening on http://{settings.host}:{settings.port}", flush=True)
    serve(create_app, settings.host, settings.port, threads=threads)


if __name__ == "__main__":
    main()

"""Connections to the two stores: a Postgres pool and a Redis client, opened once per process."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
import redis

from cxd import embedded
from cxd.config import Settings, ensure_home, redact_url
from cxd.errors import ConfigError, TransientError

log = logging.getLogger(__name__)


def resolve_urls(settings: Settings) -> Settings:
    """Fill in the store URLs, starting embedded stores under CXD_HOME where none is set."""
    ensure_home(settings)  # also holds the archive, logs and pid files with external stores
    if settings.database_url and settings.redis_url:
        return settings
    database_url = settings.database_url or embedded.start_postgres(settings.home)
    redis_url = settings.redis_url or embedded.start_redis(settings.home)
    return settings.with_urls(database_url, redis_url)


class Database:
    """A thread-safe pool of Postgres connections."""

    def __init__(self, url: str, *, maxconn: int = 16, application_name: str = "cxd"):
        self.url = url
        try:
            self._pool = psycopg2.pool.ThreadedConnectionPool(
                1, maxconn, dsn=url, application_name=application_name, connect_timeout=10
            )
        except psycopg2.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            raise ConfigError(
                f"CXD_DATABASE_URL={redact_url(url)!r} is not reachable: {first}"
            ) from None
        self._lock = threading.Lock()
        # psycopg2's pool raises when every connection is out; make threads wait their turn
        self._slots = threading.BoundedSemaphore(maxconn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled connection; commits on success, rolls back on error."""
        if not self._slots.acquire(timeout=30):
            raise TransientError("every database connection of this process stayed busy for 30 s")
        try:
            conn = self._pool.getconn()
        except BaseException:
            self._slots.release()
            raise
        broken = False
        try:
            yield conn
            conn.commit()
        except BaseException as exc:
            broken = isinstance(exc, psycopg2.InterfaceError | psycopg2.OperationalError)
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
            raise
        finally:
            self._pool.putconn(conn, close=broken or conn.closed != 0)
            self._slots.release()

    @contextlib.contextmanager
    def cursor(self, *, dict_rows: bool = False) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor in its own transaction (committed when the block ends)."""
        factory = psycopg2.extras.RealDictCursor if dict_rows else None
        with self.connection() as conn, conn.cursor(cursor_factory=factory) as cur:
            yield cur

    def fetchall(self, sql: str, params: object = None) -> list[dict]:
        """Run one query and return its rows as dicts."""
        with self.cursor(dict_rows=True) as cur:
            cur.execute(sql, params)
            return [dict(r) for r in cur.fetchall()] if cur.description else []

    def fetchone(self, sql: str, params: object = None) -> dict | None:
        """Run one query and return its first row as a dict, or None."""
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: object = None) -> None:
        """Run one statement in its own transaction."""
        with self.cursor() as cur:
            cur.execute(sql, params)

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.closeall()


def connect_redis(url: str) -> redis.Redis:
    """A Redis client for ``url``, checked with a PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=10, health_check_interval=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(f"CXD_REDIS_URL={redact_url(url)!r} is not reachable: {exc}") from None
    return client


@dataclass
class Stores:
    """Everything a cxd process needs to talk to: settings, the Postgres pool, Redis."""

    settings: Settings
    db: Database
    redis: redis.Redis

    def close(self) -> None:
        """Release the connections (the embedded servers stop when their last user exits)."""
        self.db.close()
        self.redis.close()


def open_stores(settings: Settings, *, application_name: str = "cxd") -> Stores:
    """Resolve URLs (starting embedded stores if needed) and connect to both stores."""
    settings = resolve_urls(settings)
    db = Database(settings.database_url, application_name=application_name)
    return Stores(settings=settings, db=db, redis=connect_redis(settings.redis_url))


_process_stores: dict[tuple[int, str, str], Stores] = {}


def process_stores() -> Stores:
    """The Stores of this process, opened from the environment on first use.

    rq runs each job in a forked child; connections are never shared across a fork,
    so the cache is keyed by pid as well as by the store URLs.
    """
    from cxd.config import load_settings

    settings = load_settings()
    key = (os.getpid(), settings.database_url, settings.redis_url)
    if key not in _process_stores:
        _process_stores[key] = open_stores(settings, application_name="cxd-worker")
    return _process_stores[key]

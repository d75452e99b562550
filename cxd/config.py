"""Twelve-factor configuration: every setting comes from a ``CXD_*`` environment variable.

Settings (defaults in brackets):

``CXD_DATABASE_URL``  Postgres URL [empty: embedded Postgres under ``CXD_HOME``]
``CXD_REDIS_URL``     Redis URL [empty: embedded Redis under ``CXD_HOME``]
``CXD_HOME``          data directory [``./.cxd``]
``CXD_PORT``          cxd-server port [8000]
``CXD_INGEST_PORT``   cxd-ingest port [8001]
``CXD_HOST``          bind address of both servers [127.0.0.1]
``CXD_CONFIG``        source declarations [``./cxd.yml``]
``CXD_PLUGIN_DIR``    folder of ``*.py`` plugins loaded by path [``./plugins.d``]
``CXD_LOG_LEVEL``     logging level [INFO]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from cxd.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one cxd process."""

    database_url: str = ""
    redis_url: str = ""
    home: Path = field(default_factory=lambda: Path(".cxd"))
    port: int = 8000
    ingest_port: int = 8001
    host: str = "127.0.0.1"
    config_file: Path = field(default_factory=lambda: Path("cxd.yml"))
    plugin_dir: Path = field(default_factory=lambda: Path("plugins.d"))
    log_level: str = "INFO"

    @property
    def embedded_postgres(self) -> bool:
        """True when no database URL is set and cxd runs its own Postgres."""
        return not self.database_url

    @property
    def embedded_redis(self) -> bool:
        """True when no Redis URL is set and cxd runs its own Redis."""
        return not self.redis_url

    def with_urls(self, database_url: str, redis_url: str) -> Settings:
        """A copy with the store URLs filled in (after embedded stores have started)."""
        return replace(self, database_url=database_url, redis_url=redis_url)


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 < value < 65536:
        raise ConfigError(f"{name}={raw!r} is outside 1..65535")
    return value


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in schemes:
        raise ConfigError(
            f"{name} must start with one of {', '.join(s + '://' for s in schemes)}; "
            f"got {redact_url(url)!r}"
        )


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print or log)."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and check every setting; raise one ConfigError naming the bad setting."""
    env = dict(os.environ if env is None else env)
    database_url = env.get("CXD_DATABASE_URL", "").strip()
    redis_url = env.get("CXD_REDIS_URL", "").strip()
    if database_url:
        _check_url("CXD_DATABASE_URL", database_url, ("postgres", "postgresql"))
    if redis_url:
        _check_url("CXD_REDIS_URL", redis_url, ("redis", "rediss", "unix"))
    level = env.get("CXD_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"CXD_LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        home=Path(env.get("CXD_HOME", "").strip() or ".cxd").absolute(),
        port=_port(env, "CXD_PORT", 8000),
        ingest_port=_port(env, "CXD_INGEST_PORT", 8001),
        host=env.get("CXD_HOST", "").strip() or "127.0.0.1",
        config_file=Path(env.get("CXD_CONFIG", "").strip() or "cxd.yml").absolute(),
        plugin_dir=Path(env.get("CXD_PLUGIN_DIR", "").strip() or "plugins.d").absolute(),
        log_level=level,
    )


def ensure_home(settings: Settings) -> Path:
    """Create CXD_HOME if needed and check that it is writable."""
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own: the programs of `cxd up` check at the same time
        probe = home / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"CXD_HOME={str(home)!r} is not a writable directory ({exc.strerror})"
        ) from None
    return home

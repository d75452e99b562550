"""Versioned metadata migrations: ``NNNN_layer_name.sql`` files applied once each, in order.

Later work adds a new file; it never edits an applied one. Number ranges keep layers
apart: 0001-0099 foundation, 0100-0199 batch, 0200-0299 speed, 0300-0399 plugins,
0400-0499 query router, 0500-0599 serving, 0600-0699 console.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cxd.stores import Database

log = logging.getLogger(__name__)

FOLDER = Path(__file__).parent
_LOCK_ID = 0x0C7D0001  # advisory lock held while migrating, so two processes never race


def available() -> list[tuple[str, Path]]:
    """Every migration shipped with cxd as (version, path), in the order they apply."""
    return [(p.stem, p) for p in sorted(FOLDER.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def applied(db: Database) -> list[str]:
    """Versions already applied to this database (empty before ``cxd init``)."""
    row = db.fetchone("SELECT to_regclass('cxd.schema_migrations') AS t")
    if not row or row["t"] is None:
        return []
    return [
        r["version"]
        for r in db.fetchall("SELECT version FROM cxd.schema_migrations ORDER BY version")
    ]


def migrate(db: Database) -> list[str]:
    """Apply every pending migration, each in its own transaction; return what was applied."""
    done: list[str] = []
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        conn.commit()
        try:
            cur.execute("CREATE SCHEMA IF NOT EXISTS cxd")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS cxd.schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT version FROM cxd.schema_migrations")
            have = {r[0] for r in cur.fetchall()}
            for version, path in available():
                if version in have:
                    continue
                log.info("applying migration %s", version)
                cur.execute(path.read_text())
                cur.execute("INSERT INTO cxd.schema_migrations (version) VALUES (%s)", (version,))
                conn.commit()
                done.append(version)
        finally:
            conn.rollback()
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
            conn.commit()
    return done


def is_current(db: Database) -> bool:
    """True when every shipped migration has been applied."""
    return set(applied(db)) >= {v for v, _ in available()}

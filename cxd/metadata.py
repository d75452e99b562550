"""Dump and restore of the metadata: declared sources (with secrets), saved queries and
tokens (hashes), as one JSON document. Data in raw is not part of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psycopg2 import sql

from cxd.web import to_json_value

TABLES = ("sources", "datasets", "saved_queries", "tokens")


def dump(db, path: Path) -> dict[str, int]:
    """Write the metadata tables to ``path`` (mode 0600: it holds secrets); return row counts."""
    doc: dict[str, Any] = {"format": "cxd-metadata", "version": 1, "tables": {}}
    counts = {}
    for table in TABLES:
        rows = db.fetchall(sql.SQL("SELECT * FROM {}").format(sql.Identifier("cxd", table)))
        doc["tables"][table] = rows
        counts[table] = len(rows)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(doc, default=to_json_value, indent=1))
    return counts


def restore(db, path: Path) -> dict[str, int]:
    """Insert or replace every row of a dump, all in one transaction; return row counts."""
    doc = json.loads(path.read_text())
    if doc.get("format") != "cxd-metadata":
        from cxd.errors import BadInput

        raise BadInput(f"{path} is not a cxd metadata dump")
    counts = {}
    with db.connection() as conn, conn.cursor() as cur:
        for table in TABLES:
            rows = doc["tables"].get(table, [])
            for row in rows:
                cols = list(row)
                values = [
                    json.dumps(v) if isinstance(v, dict | list) and c != "key" else v
                    for c, v in row.items()
                ]
                pk = "id" if table == "tokens" else "name"
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT ({pk}) DO UPDATE SET {u}"
                    ).format(
                        t=sql.Identifier("cxd", table),
                        c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                        v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                        pk=sql.Identifier(pk),
                        u=sql.SQL(", ").join(
                            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols
                        ),
                    ),
                    values,
                )
            counts[table] = len(rows)
        cur.execute(
            "SELECT setval('cxd.tokens_id_seq', greatest((SELECT max(id) FROM cxd.tokens), 1))"
        )
    return counts

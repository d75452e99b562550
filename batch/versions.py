"""Point-in-time datasets as SCD type 2: every change of an entity is a new version with
``_valid_from`` / ``_valid_to`` (NULL = current); ask for the state at any past instant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg2 import sql

from batch.tables import current_view, raw_table
from cxd.catalog import get_source
from cxd.errors import BadInput


def as_of(db, dataset: str, at: datetime | str) -> list[dict[str, Any]]:
    """The entities of point-in-time ``dataset`` as they were at ``at`` (declared columns,
    ordered by key)."""
    spec = get_source(db, dataset)
    if spec.kind != "point_in_time":
        raise BadInput(f"dataset {dataset!r} is {spec.kind}; as-of needs a point_in_time dataset")
    cols = sql.SQL(", ").join(map(sql.Identifier, spec.column_names))
    order = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    return db.fetchall(
        sql.SQL(
            "SELECT {c} FROM {t} WHERE _valid_from <= %(at)s"
            " AND (_valid_to IS NULL OR _valid_to > %(at)s) ORDER BY {o}"
        ).format(c=cols, t=raw_table(dataset), o=order),
        {"at": at},
    )


def current(db, dataset: str) -> list[dict[str, Any]]:
    """The current version of every entity (what ``raw."<ds>_current"`` shows)."""
    spec = get_source(db, dataset)
    cols = sql.SQL(", ").join(map(sql.Identifier, spec.column_names))
    order = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    return db.fetchall(
        sql.SQL("SELECT {c} FROM {v} ORDER BY {o}").format(c=cols, v=current_view(dataset), o=order)
    )


def history(db, dataset: str, **key: Any) -> list[dict[str, Any]]:
    """Every version of one entity (given by its key columns), oldest first."""
    where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key)
    return db.fetchall(
        sql.SQL("SELECT * FROM {t} WHERE {w} ORDER BY _valid_from").format(
            t=raw_table(dataset), w=where
        ),
        tuple(key.values()),
    )

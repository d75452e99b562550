"""Raw and staging tables: created from a dataset's declaration and evolved by adding columns."""

from __future__ import annotations

from psycopg2 import sql

from batch.exceptions import SchemaChangeError
from cxd.catalog import SourceSpec

ENGINE_DDL = [
    ("_seq", "bigint NOT NULL"),
    ("_ingested_at", "timestamptz NOT NULL DEFAULT now()"),
    ("_run_id", "bigint"),
    ("_stream_id", "text"),
]


def raw_table(name: str) -> sql.Composed:
    """The quoted name of a dataset's raw table."""
    return sql.Identifier("raw", name)


def staging_table(name: str) -> sql.Composed:
    """The quoted name of a dataset's staging table."""
    return sql.Identifier("staging", name)


def unique_columns(spec: SourceSpec) -> list[str]:
    """Columns a raw row is unique on (empty: every row is kept)."""
    cols = list(spec.key)
    if spec.kind == "instantaneous" and spec.time_column and spec.time_column not in cols:
        cols.append(spec.time_column)  # history of the current value, one row per instant
    return cols


def _existing_columns(cur, schema: str, table: str) -> dict[str, str]:
    cur.execute(
        "SELECT column_name, format_type(a.atttypid, a.atttypmod) AS type"
        " FROM information_schema.columns c"
        " JOIN pg_attribute a ON a.attrelid = format('%%I.%%I', c.table_schema, c.table_name)::regclass"
        "  AND a.attname = c.column_name"
        " WHERE c.table_schema = %s AND c.table_name = %s",
        (schema, table),
    )
    return {r[0]: r[1] for r in cur.fetchall()}


_ALIASES = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "integer": "integer",
}


def _same_type(declared: str, existing: str) -> bool:
    return _ALIASES.get(declared, declared) == existing


def ensure_tables(cur, spec: SourceSpec) -> None:
    """Create the dataset's raw and staging tables, or add newly declared columns.

    A declared column whose type differs from the raw table's raises SchemaChangeError
    before anything is changed.
    """
    existing = _existing_columns(cur, "raw", spec.name)
    if existing:
        for col in spec.columns:
            if col.name in existing and not _same_type(col.type, existing[col.name]):
                raise SchemaChangeError(
                    f"dataset {spec.name!r}: column {col.name!r} is {existing[col.name]} in raw "
                    f"but declared {col.type}; add a new column instead of changing its type"
                )
        for col in spec.columns:
            if col.name not in existing:
                for table in (raw_table(spec.name), staging_table(spec.name)):
                    cur.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            table, sql.Identifier(col.name), sql.SQL(col.type)
                        )
                    )
        return
    declared = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in spec.columns
    ]
    engine = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in ENGINE_DDL]
    cur.execute(
        sql.SQL("CREATE TABLE {} ({})").format(
            raw_table(spec.name), sql.SQL(", ").join(declared + engine)
        )
    )
    cur.execute(sql.SQL("CREATE INDEX ON {} (_seq)").format(raw_table(spec.name)))
    unique = unique_columns(spec)
    if unique:
        cur.execute(
            sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(
                raw_table(spec.name), sql.SQL(", ").join(map(sql.Identifier, unique))
            )
        )
    if spec.time_column:
        cur.execute(
            sql.SQL("CREATE INDEX ON {} ({})").format(
                raw_table(spec.name), sql.Identifier(spec.time_column)
            )
        )
    cur.execute(
        sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} ({}, _stream_id text)").format(
            staging_table(spec.name), sql.SQL(", ").join(declared)
        )
    )


def register_dataset(db, spec: SourceSpec) -> None:
    """Create or evolve the tables of ``spec`` in one transaction."""
    with db.cursor() as cur:
        ensure_tables(cur, spec)


def drop_dataset(db, name: str) -> None:
    """Drop a dataset's raw and staging tables and its watermark (its source row stays)."""
    with db.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(raw_table(name)))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(staging_table(name)))
        cur.execute("DELETE FROM cxd.watermarks WHERE dataset = %s", (name,))
        cur.execute("DELETE FROM cxd.datasets WHERE name = %s", (name,))

"""Raw and staging tables: created from a dataset's declaration and evolved by adding columns.

Per kind:

- time_series: ``raw."<ds>"`` is range-partitioned on the time column, one partition per
  month, created on demand by the loader (see :mod:`batch.partitions`);
- point_in_time: SCD-2 versions with ``_valid_from`` / ``_valid_to`` (NULL = current) and a
  view ``raw."<ds>_current"`` of the current versions;
- instantaneous: every observed value is kept (history); the latest values live in Redis.
"""

from __future__ import annotations

from psycopg2 import sql

from batch.exceptions import SchemaChangeError
from cxd.catalog import SourceSpec

ENGINE_DDL = [
    ("_seq", "bigint NOT NULL DEFAULT nextval('cxd.change_seq')"),
    ("_ingested_at", "timestamptz NOT NULL DEFAULT now()"),
    ("_run_id", "bigint"),
    ("_stream_id", "text"),
]
VERSION_DDL = [("_valid_from", "timestamptz NOT NULL DEFAULT now()"), ("_valid_to", "timestamptz")]
STAGING_ENGINE = [("_stream_id", "text"), ("_ord", "bigint"), ("_run_id", "bigint")]


def raw_table(name: str) -> sql.Composed:
    """The quoted name of a dataset's raw table."""
    return sql.Identifier("raw", name)


def staging_table(name: str) -> sql.Composed:
    """The quoted name of a dataset's staging table."""
    return sql.Identifier("staging", name)


def current_view(name: str) -> sql.Composed:
    """The quoted name of a point-in-time dataset's view of current versions."""
    return sql.Identifier("raw", f"{name}_current")


def unique_columns(spec: SourceSpec) -> list[str]:
    """Columns a raw row is unique on (empty: every row is kept).

    For point_in_time this is the entity key among *current* versions.
    """
    cols = list(spec.key)
    if spec.kind == "instantaneous":
        if not spec.time_column:
            return []  # no time to tell observations apart: keep every one (history)
        if spec.time_column not in cols:
            cols.append(spec.time_column)  # one row per entity and instant
    if spec.kind == "time_series" and cols and spec.time_column not in cols:
        cols.append(spec.time_column)  # a partitioned table's unique keys hold the time column
    return cols


def is_partitioned(cur, name: str) -> bool:
    """True when the raw table is range-partitioned (time series created by this layer)."""
    cur.execute(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'raw' AND c.relname = %s",
        (name,),
    )
    row = cur.fetchone()
    return bool(row and row[0])


def _existing_columns(cur, schema: str, table: str) -> dict[str, str]:
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, table),
    )
    return {r[0]: r[1] for r in cur.fetchall()}


_ALIASES = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "integer": "integer",
}


def same_type(declared: str, existing: str) -> bool:
    """True when a declared column type is the type Postgres reports (format_type)."""
    return _ALIASES.get(declared, declared) == existing


def _add_column(cur, table: sql.Composable, name: str, ctype: str) -> None:
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            table, sql.Identifier(name), sql.SQL(ctype)
        )
    )


def ensure_tables(cur, spec: SourceSpec) -> None:
    """Create the dataset's raw and staging tables, or add newly declared columns.

    A declared column whose type differs from the raw table's raises SchemaChangeError
    before anything is changed.
    """
    existing = _existing_columns(cur, "raw", spec.name)
    declared = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in spec.columns
    ]
    if existing:
        for col in spec.columns:
            if col.name in existing and not same_type(col.type, existing[col.name]):
                raise SchemaChangeError(
                    f"dataset {spec.name!r}: column {col.name!r} is {existing[col.name]} in raw "
                    f"but declared {col.type}; add a new column instead of changing its type"
                )
        for col in spec.columns:
            if col.name not in existing:
                _add_column(cur, raw_table(spec.name), col.name, col.type)
                _add_column(cur, staging_table(spec.name), col.name, col.type)
        if spec.kind == "point_in_time":
            _create_current_view(cur, spec)
        cur.execute(
            "SELECT column_default IS NULL FROM information_schema.columns"
            " WHERE table_schema = 'raw' AND table_name = %s AND column_name = '_seq'",
            (spec.name,),
        )
        if cur.fetchone()[0]:  # tables made before loads could COPY straight into raw
            cur.execute(
                sql.SQL(
                    "ALTER TABLE {} ALTER COLUMN _seq SET DEFAULT nextval('cxd.change_seq')"
                ).format(raw_table(spec.name))
            )
    else:
        _create_raw(cur, spec, declared)
    cur.execute(
        sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} ({})").format(
            staging_table(spec.name), sql.SQL(", ").join(declared)
        )
    )
    for name, ctype in STAGING_ENGINE:
        _add_column(cur, staging_table(spec.name), name, ctype)


def _create_raw(cur, spec: SourceSpec, declared: list[sql.Composable]) -> None:
    engine = list(ENGINE_DDL)
    if spec.kind == "point_in_time":
        engine += VERSION_DDL
    columns = declared + [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in engine]
    partition = sql.SQL("")
    if spec.kind == "time_series" and spec.time_column:
        partition = sql.SQL(" PARTITION BY RANGE ({})").format(sql.Identifier(spec.time_column))
    table = raw_table(spec.name)
    cur.execute(
        sql.SQL("CREATE TABLE {} ({}){}").format(table, sql.SQL(", ").join(columns), partition)
    )
    cur.execute(sql.SQL("CREATE INDEX ON {} (_seq)").format(table))
    unique = unique_columns(spec)
    idents = sql.SQL(", ").join(map(sql.Identifier, unique))
    if spec.kind == "point_in_time":
        cur.execute(
            sql.SQL("CREATE UNIQUE INDEX ON {} ({}) WHERE _valid_to IS NULL").format(table, idents)
        )
        cur.execute(sql.SQL("CREATE INDEX ON {} ({}, _valid_from)").format(table, idents))
        _create_current_view(cur, spec)
    elif unique:
        cur.execute(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(table, idents))
    if spec.time_column and spec.time_column not in unique[:1]:
        cur.execute(
            sql.SQL("CREATE INDEX ON {} ({})").format(table, sql.Identifier(spec.time_column))
        )


def _create_current_view(cur, spec: SourceSpec) -> None:
    cur.execute(
        sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT * FROM {} WHERE _valid_to IS NULL").format(
            current_view(spec.name), raw_table(spec.name)
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

"""Pass 6: each dataset reference becomes a subquery over the layer(s) the plan chose.

- batch: the raw table;
- merge: raw rows plus the speed rows above W, bound as one array per column
  (:mod:`query_router.speed_rows`). Where raw
  keeps one row per key (a declared key), a speed row replaces the raw row of its key
  and the last speed row of a key wins, exactly as the loader will merge them later;
- speed: the speed rows (the latest value per entity for instantaneous datasets).

An instantaneous dataset reads as its current value per entity.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp

from cxd.catalog import SourceSpec
from query_router.plan import Plan
from query_router.resolve_datasets import dataset_tables
from query_router.speed_rows import ORDER, quote_ident, unnest_sql

SPEED_PREFIX = "__cxd_speed_"


def speed_param(dataset: str, index: int) -> str:
    """Name of the bound parameter carrying column ``index`` of a dataset's speed rows."""
    return f"{SPEED_PREFIX}{dataset}#{index}"


def speed_columns(spec: SourceSpec) -> list[tuple[str, str]]:
    """(name, type) of the columns a dataset's speed rows are bound with."""
    return [(c.name, c.type) for c in spec.columns]


def unique_columns(spec: SourceSpec) -> list[str]:
    """Columns raw keeps one row per (as the batch loader merges them)."""
    cols = list(spec.key)
    if spec.kind == "instantaneous" and spec.time_column and spec.time_column not in cols:
        cols.append(spec.time_column)
    return cols


def relation_sql(spec: SourceSpec, layer: str, position: int | None, extra=()) -> str:
    """SQL of the relation a dataset name stands for under ``layer``."""
    cols = ", ".join(quote_ident(c) for c in spec.column_names)
    raw_cols = ", ".join([cols, *(quote_ident(c) for c in extra)])
    nulls = ", ".join([cols, *(f"CAST(NULL AS timestamptz) AS {quote_ident(c)}" for c in extra)])
    raw = f'raw."{spec.name}"'
    speed = unnest_sql(speed_columns(spec), position) if position else ""
    instant = spec.kind == "instantaneous"
    if layer == "batch":
        body = f"SELECT {raw_cols}, _seq AS {ORDER} FROM {raw}" if instant else None
        if not instant:
            return f"SELECT {raw_cols} FROM {raw}"
    elif layer == "speed":
        return f"SELECT {nulls} FROM {speed}"
    else:
        unique = unique_columns(spec)
        if unique:
            match = " AND ".join(f"_s.{quote_ident(c)} = _r.{quote_ident(c)}" for c in unique)
            keys = ", ".join(quote_ident(c) for c in unique)
            raw_part = (
                f"SELECT {raw_cols}, 0 AS {ORDER} FROM {raw} AS _r"
                f" WHERE NOT EXISTS (SELECT 1 FROM {speed} WHERE {match})"
            )
            speed_part = (
                f"(SELECT DISTINCT ON ({keys}) {nulls}, 1 + {ORDER} AS {ORDER} FROM {speed}"
                f" ORDER BY {keys}, {ORDER} DESC)"
            )
        elif not instant:
            # no row replaces another: a plain UNION ALL, which Postgres flattens into one
            # append of both sides (filters pushed into each, no projection in between)
            return f"SELECT {raw_cols} FROM {raw} UNION ALL SELECT {nulls} FROM {speed}"
        else:
            raw_part = f"SELECT {raw_cols}, 0 AS {ORDER} FROM {raw}"
            speed_part = f"SELECT {nulls}, 1 + {ORDER} AS {ORDER} FROM {speed}"
        body = f"{raw_part} UNION ALL {speed_part}"
        if not instant:
            return f"SELECT {raw_cols} FROM ({body}) AS _m"
    keys = ", ".join(quote_ident(c) for c in spec.key)
    newest = f"{quote_ident(spec.time_column)} DESC NULLS LAST, " if spec.time_column else ""
    all_cols = ", ".join(
        [*(quote_ident(c) for c in spec.column_names), *(quote_ident(c) for c in extra)]
    )
    return (
        f"SELECT DISTINCT ON ({keys}) {all_cols} FROM ({body}) AS _m"
        f" ORDER BY {keys}, {newest}{ORDER} DESC"
    )


@functools.lru_cache(maxsize=256)
def _parsed(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="postgres")


def rewrite_merge(plan: Plan) -> Plan:
    """Replace every dataset table by ``(<relation>) AS <alias>``."""
    plan.logical = plan.expression.copy()
    positions: dict[str, int] = {}
    for name, layer in plan.layers.items():
        if layer != "batch":
            positions[name] = len(plan.positional) + 1
            columns = len(speed_columns(plan.datasets[name])) + 1  # and the stream order
            plan.positional += [speed_param(name, i) for i in range(columns)]
    relations = {
        name: _parsed(
            relation_sql(
                spec,
                plan.layers[name],
                positions.get(name),
                tuple(plan.extra_columns.get(name, ())),
            )
        )
        for name, spec in plan.datasets.items()
    }
    for table in dataset_tables(plan.expression, plan.datasets):
        alias = exp.TableAlias(this=exp.to_identifier(table.alias_or_name))
        columns = table.args.get("alias") and table.args["alias"].args.get("columns")
        if columns:
            alias.set("columns", columns)
        table.replace(exp.Subquery(this=relations[table.name].copy(), alias=alias))
    return plan

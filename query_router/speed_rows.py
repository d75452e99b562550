"""Speed rows as query parameters: one array per column, unnested in SQL.

Postgres reads a binary array of timestamps, numbers or text without parsing text (a
``jsonb_to_recordset`` of 50,000 events spends most of its time parsing), so a column
whose every value is in a plain form goes as a binary array. Any other column goes as
an array literal of the values' text and Postgres types each element with the column
type's own input function, as it would a JSON value's text.
"""

from __future__ import annotations

import json
import re
import struct
from datetime import UTC, date, datetime
from typing import Any

from psycopg import pq
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper

ORDER = "__cxd_ord"  # position of a speed row in the stream (later wins)

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_NAIVE = datetime(2000, 1, 1)
_PG_EPOCH_DATE = date(2000, 1, 1)
# ISO 8601 as Postgres and Python both read it (anything else goes as text)
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?"
)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Unfit(Exception):
    """A value with no plain binary form: its column goes as text."""


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _micros(delta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment(value: Any) -> datetime:
    if not isinstance(value, str) or not _ISO.fullmatch(value):
        raise _Unfit(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _timestamptz(value: Any) -> bytes:
    moment = _moment(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the router's sessions run in UTC
    return struct.pack(">q", _micros(moment - _PG_EPOCH))


def _timestamp(value: Any) -> bytes:
    # Postgres ignores an offset given to a timestamp without time zone
    return struct.pack(">q", _micros(_moment(value).replace(tzinfo=None) - _PG_EPOCH_NAIVE))


def _date(value: Any) -> bytes:
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise _Unfit(value)
    return struct.pack(">i", (date.fromisoformat(value) - _PG_EPOCH_DATE).days)


def _integer(fmt: str):
    def pack(value: Any) -> bytes:
        if type(value) is not int:
            raise _Unfit(value)
        try:
            return struct.pack(fmt, value)
        except struct.error:
            raise _Unfit(value) from None

    return pack


def _double(value: Any) -> bytes:
    if type(value) not in (int, float):
        raise _Unfit(value)
    return struct.pack(">d", float(value))


def _boolean(value: Any) -> bytes:
    if type(value) is not bool:
        raise _Unfit(value)
    return b"\x01" if value else b"\x00"


def _text(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Unfit(value)
    return value.encode()


# column type -> (array type oid, element type oid, element encoder)
_BINARY = {
    "text": (1009, 25, _text),
    "bigint": (1016, 20, _integer(">q")),
    "integer": (1007, 23, _integer(">i")),
    "smallint": (1005, 21, _integer(">h")),
    "double precision": (1022, 701, _double),
    "boolean": (1000, 16, _boolean),
    "timestamptz": (1185, 1184, _timestamptz),
    "timestamp": (1115, 1114, _timestamp),
    "date": (1182, 1082, _date),
}


class BinaryArray(bytes):
    """A Postgres array in binary form, sent as is (``oid``: the array type)."""

    oid = 0


class _ArrayDumper(Dumper):
    format = pq.Format.BINARY

    def dump(self, obj: BinaryArray) -> bytes:
        return bytes(obj)


_array_classes: dict[int, type[BinaryArray]] = {}


def _array_class(oid: int) -> type[BinaryArray]:
    if oid not in _array_classes:
        _array_classes[oid] = type(f"BinaryArray{oid}", (BinaryArray,), {"oid": oid})
    return _array_classes[oid]


def register(context: AdaptContext) -> None:
    """Let ``context`` (a connection) send the binary arrays this module makes."""
    for oid, _, _ in _BINARY.values():
        cls = _array_class(oid)
        context.adapters.register_dumper(cls, type(f"Dumper{oid}", (_ArrayDumper,), {"oid": oid}))


def _binary_array(ctype: str, values: list[Any]) -> BinaryArray:
    array_oid, element_oid, encode = _BINARY[ctype]
    parts = []
    nulls = 0
    for value in values:
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
            nulls = 1
        else:
            data = encode(value)
            parts.append(struct.pack(">i", len(data)) + data)
    if not values:
        head = struct.pack(">iii", 0, 0, element_oid)
    else:
        head = struct.pack(">iiiii", 1, nulls, element_oid, len(values), 1)
    return _array_class(array_oid)(head + b"".join(parts))


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(", ", ": "))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def column_array(ctype: str, values: list[Any]) -> BinaryArray | str:
    """One column's values as a parameter: a binary array, or an array literal."""
    if ctype in _BINARY:
        try:
            return _binary_array(ctype, values)
        except (_Unfit, ValueError, OverflowError, UnicodeEncodeError):
            pass
    return "{" + ",".join(map(_element, values)) + "}"


def row_arrays(columns: list[tuple[str, str]], records: list[dict]) -> list[BinaryArray | str]:
    """The parameters of ``records``: one array per (name, type) column, then their order."""
    out = [column_array(ctype, [rec.get(name) for rec in records]) for name, ctype in columns]
    out.append(column_array("bigint", list(range(len(records)))))
    return out


def unnest_sql(columns: list[tuple[str, str]], first: int) -> str:
    """``unnest(...) AS _s(...)`` over the arrays bound from parameter ``$first`` on."""
    casts = [
        f"CAST(${first + i} AS {ctype}[])"
        for i, (_, ctype) in enumerate([*columns, (ORDER, "bigint")])
    ]
    names = ", ".join(quote_ident(name) for name, _ in columns)
    return f"unnest({', '.join(casts)}) AS _s({names}, {ORDER})"

"""Arrow columns as PostgreSQL's binary ``COPY`` format, built column by column.

The loader stages each file with ``COPY``. In CSV, a snapshot file of 100,000 sales orders took
about 160-190 ms to write (pyarrow) and 230 ms for the server to parse; in the binary format, 70
and 115 ms (BENCHMARKS.md, bulk load). Each row is its field count, then per column a 4-byte
length (-1: null) and the value in the type's binary form: big-endian integers and floats, days
and microseconds since 2000-01-01 for dates and timestamps, UTF-8 for text, base-10000 digits for
numeric. The rows are joined by Arrow from per-column pieces; values are put in network byte
order by reversing each one's bytes. Only pyarrow is used: the loader's Lambda artifact has no
room for numpy under the 250 MB limit (docs/stream_processors.md).

Only the types whose binary form is written here are taken (:func:`binary_copy` says None for the
others, and the loader stages such a file in CSV): PostgreSQL checks the length of a value, the
digits of a numeric and the encoding of text as it does in CSV, so an unsuitable value is
rejected in the same way. ``tests/integration/warehouse_loader/test_pgcopy.py`` holds the rows
to what ``COPY`` of the same columns in CSV stores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
TRAILER = b"\xff\xff"
_EMPTY = pa.scalar(b"", pa.binary())
_NULL = pa.scalar((-1).to_bytes(4, "big", signed=True), pa.binary())
# 2000-01-01, in microseconds and days since 1970-01-01 (typed: the difference keeps the width)
_PG_EPOCH_US = pa.scalar(946_684_800_000_000, pa.int64())
_PG_EPOCH_DAYS = pa.scalar(10_957, pa.int32())
_DIGIT = pa.scalar(10_000, pa.uint64())  # numeric's base
# PostgreSQL types whose binary form is the text's UTF-8 bytes.
_TEXT = re.compile(r"text|character varying(\(\d+\))?|character(\(\d+\))?|json")
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_FIXED: dict[pa.DataType, re.Pattern[str]] = {
    typ: re.compile(pattern) for typ, pattern in (
        (pa.int16(), "smallint"), (pa.int32(), "integer"), (pa.int64(), "bigint"),
        (pa.float32(), "real"), (pa.float64(), "double precision"), (pa.bool_(), "boolean"),
        (pa.date32(), "date"), (pa.timestamp("us"), r"timestamp(\(\d\))? without time zone"),
        (pa.timestamp("us", tz="UTC"), r"timestamptz|timestamp(\(\d\))? with time zone"))}

Piece: TypeAlias = pa.Array | pa.Scalar  # a column of values, or one value for every row


def binary_copy(columns: Sequence[tuple[pa.Array, str]]) -> bytes | None:
    """``COPY ... FROM STDIN (FORMAT binary)`` data of the rows of ``columns`` (each an Arrow
    array and the PostgreSQL type of its column); None when a column's pair of types is not one
    this module writes."""
    pieces: list[Piece] = [_bytes(len(columns).to_bytes(2, "big"))]
    for array, pg_type in columns:
        field = _field(array, pg_type)
        if field is None:
            return None
        pieces += field
    rows = len(columns[0][0]) if columns else 0
    if not rows:
        return HEADER + TRAILER
    joined = pc.binary_join_element_wise(*pieces, _EMPTY)
    offsets = memoryview(joined.buffers()[1]).cast("i")
    first, last = offsets[joined.offset], offsets[joined.offset + rows]
    return b"".join((HEADER, memoryview(joined.buffers()[2])[first:last], TRAILER))


def _field(array: pa.Array, pg_type: str) -> tuple[Piece, Piece] | None:
    """The column's length words and values, as two pieces of every row; None: not written here."""
    typ = array.type
    if typ == pa.string() and _TEXT.fullmatch(pg_type):
        raw = array.cast(pa.binary())
        lengths = pc.if_else(array.is_null(), pa.scalar(-1, pa.int32()), pc.binary_length(raw))
        return _big_endian(lengths), pc.fill_null(raw, _EMPTY)
    if pa.types.is_decimal128(typ) and (m := _NUMERIC.fullmatch(pg_type)) and (
            (int(m[1]), int(m[2])) == (typ.precision, typ.scale)):
        numeric = _numeric(array, typ.precision, typ.scale)
        if numeric is None:
            return None
        width, values = numeric
    elif typ in _FIXED and _FIXED[typ].fullmatch(pg_type):
        width, values = _fixed(array)
    else:
        return None
    length = _bytes(width.to_bytes(4, "big"))
    if not array.null_count:
        return length, values
    null = array.is_null()
    return pc.if_else(null, _NULL, length), pc.if_else(null, _EMPTY, values)


def _fixed(array: pa.Array) -> tuple[int, Piece]:
    """The width of the column's values and each one in its binary form (nulls' are any bytes)."""
    typ = array.type
    if typ == pa.bool_():
        return 1, pc.if_else(array, _bytes(b"\x01"), _bytes(b"\x00"))
    if pa.types.is_timestamp(typ):
        array = pc.subtract(array.cast(pa.int64()), _PG_EPOCH_US)
    elif pa.types.is_date32(typ):
        array = pc.subtract(array.cast(pa.int32()), _PG_EPOCH_DAYS)
    return array.type.byte_width, _big_endian(array)


def _numeric(array: pa.Array, precision: int, scale: int) -> tuple[int, Piece] | None:
    """The width of the column's values and each decimal as a numeric's binary form: digit count,
    weight, sign, display scale, then its base-10000 digits, as many for every value (leading and
    trailing zero digits are allowed and dropped by the server). None when the digits need more
    than 64 bits."""
    fraction_digits = -(-scale // 4)  # base-10000 digits after the point
    shift = 4 * fraction_digits - scale
    if precision > 18 or precision + shift > 19:  # the value fits an int64, shifted a uint64
        return None
    digits = -(-(precision + shift) // 4)
    # The low 64 bits of each 128-bit value: all of it at this precision.
    words = pa.Array.from_buffers(pa.int64(), 2 * (len(array) + array.offset), [None, array.buffers()[1]])
    pairs = pa.Array.from_buffers(pa.list_(pa.int64(), 2), len(array), [None], offset=array.offset,
                                  children=[words])
    unscaled = pc.list_element(pairs, 0)
    # unchecked: a null's slot holds any bytes (its digits are dropped with it)
    rest = pc.multiply(pc.abs(unscaled).cast(pa.uint64(), safe=False), pa.scalar(10 ** shift, pa.uint64()))
    parts: list[Piece] = []
    for _ in range(digits):  # the last digit first
        higher = pc.divide(rest, _DIGIT)
        parts.append(_big_endian(pc.subtract(rest, pc.multiply(higher, _DIGIT)).cast(pa.uint16())))
        rest = higher
    head = (digits.to_bytes(2, "big") + (digits - fraction_digits - 1).to_bytes(2, "big", signed=True))
    sign = pc.if_else(pc.less(unscaled, 0), _bytes(b"\x40\x00"), _bytes(b"\x00\x00"))
    values = pc.binary_join_element_wise(_bytes(head), sign, _bytes(scale.to_bytes(2, "big")),
                                         *reversed(parts), _EMPTY)
    return 2 * (4 + digits), values


def _big_endian(array: pa.Array) -> pa.Array:
    """A binary array of each value of a fixed-width array in network byte order (the value's
    bytes reversed; a null's are any)."""
    raw = pa.Array.from_buffers(pa.binary(array.type.byte_width), len(array), [None, array.buffers()[1]],
                                offset=array.offset)
    return pc.binary_reverse(raw.cast(pa.binary()))


def _bytes(value: bytes) -> pa.Scalar:
    return pa.scalar(value, pa.binary())

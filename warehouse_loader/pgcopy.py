"""Arrow columns as PostgreSQL's binary ``COPY`` format, built column by column.

The loader stages each file with ``COPY``. In CSV, a snapshot file of 100,000 sales orders took
about 160-190 ms to write (pyarrow) and 230 ms for the server to parse; in the binary format, 70
and 115 ms (BENCHMARKS.md, bulk load). Each row is its field count, then per column a 4-byte
length (-1: null) and the value in the type's binary form: big-endian integers and floats, days
and microseconds since 2000-01-01 for dates and timestamps, UTF-8 for text, base-10000 digits for
numeric. The rows are joined by Arrow from per-column pieces, as capture joins its Avro bodies.

Only the types whose binary form is written here are taken (:func:`binary_copy` says None for the
others, and the loader stages such a file in CSV): PostgreSQL checks the length of a value, the
digits of a numeric and the encoding of text as it does in CSV, so an unsuitable value is
rejected in the same way. ``tests/integration/warehouse_loader/test_pgcopy.py`` holds the rows
to what ``COPY`` of the same columns in CSV stores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
TRAILER = b"\xff\xff"
_EMPTY = pa.scalar(b"", pa.binary())
_NULL = pa.scalar((-1).to_bytes(4, "big", signed=True), pa.binary())
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, in microseconds since 1970-01-01
_PG_EPOCH_DAYS = 10_957
# PostgreSQL types whose binary form is the text's UTF-8 bytes.
_TEXT = re.compile(r"text|character varying(\(\d+\))?|character(\(\d+\))?|json")
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_FIXED: dict[pa.DataType, tuple[re.Pattern[str], str]] = {
    typ: (re.compile(pattern), dtype) for typ, pattern, dtype in (
        (pa.int16(), "smallint", ">i2"), (pa.int32(), "integer", ">i4"), (pa.int64(), "bigint", ">i8"),
        (pa.float32(), "real", ">f4"), (pa.float64(), "double precision", ">f8"),
        (pa.bool_(), "boolean", "u1"), (pa.date32(), "date", ">i4"),
        (pa.timestamp("us"), r"timestamp(\(\d\))? without time zone", ">i8"),
        (pa.timestamp("us", tz="UTC"), r"timestamptz|timestamp(\(\d\))? with time zone", ">i8"))}


def binary_copy(columns: Sequence[tuple[pa.Array, str]]) -> bytes | None:
    """``COPY ... FROM STDIN (FORMAT binary)`` data of the rows of ``columns`` (each an Arrow
    array and the PostgreSQL type of its column); None when a column's pair of types is not one
    this module writes."""
    pieces: list[pa.Array | pa.Scalar] = [pa.scalar(len(columns).to_bytes(2, "big"), pa.binary())]
    for array, pg_type in columns:
        field = _field(array, pg_type)
        if field is None:
            return None
        pieces += field
    rows = len(columns[0][0]) if columns else 0
    joined = pc.binary_join_element_wise(*pieces, _EMPTY)
    offsets = np.frombuffer(joined.buffers()[1], np.int32, rows + 1, joined.offset * 4)
    return b"".join((HEADER, memoryview(joined.buffers()[2])[offsets[0]:offsets[-1]], TRAILER))


def _field(array: pa.Array, pg_type: str) -> tuple[pa.Array | pa.Scalar, pa.Array] | None:
    """The column's length words and values, as two pieces of every row; None: not written here."""
    typ = array.type
    if typ == pa.string() and _TEXT.fullmatch(pg_type):
        raw = array.cast(pa.binary())
        lengths = pc.if_else(array.is_null(), -1, pc.binary_length(raw)).to_numpy()
        return _rows(lengths.astype(">i4")), pc.fill_null(raw, _EMPTY)
    if pa.types.is_decimal128(typ) and (m := _NUMERIC.fullmatch(pg_type)) and (
            (int(m[1]), int(m[2])) == (typ.precision, typ.scale)):
        values = _numeric(array, typ.precision, typ.scale)
        if values is None:
            return None
    elif typ in _FIXED and _FIXED[typ][0].fullmatch(pg_type):
        values = _fixed(array, _FIXED[typ][1])
    else:
        return None
    width = pa.scalar(len(values[0]).to_bytes(4, "big") if len(values) else b"", pa.binary())
    if not array.null_count:
        return width, _rows(values)
    null = array.is_null()
    return pc.if_else(null, _NULL, width), pc.if_else(null, _EMPTY, _rows(values))


def _fixed(array: pa.Array, dtype: str) -> npt.NDArray[np.uint8]:
    """Each value in its fixed-width binary form, a row of bytes each (nulls as zero)."""
    typ = array.type
    if pa.types.is_timestamp(typ) or pa.types.is_date32(typ):
        plain, epoch = ((pa.int64(), _PG_EPOCH_US) if pa.types.is_timestamp(typ)
                        else (pa.int32(), _PG_EPOCH_DAYS))
        values = array.cast(plain).fill_null(0).to_numpy() - epoch
    else:
        values = array.fill_null(False if typ == pa.bool_() else 0).to_numpy(zero_copy_only=False)
    out = np.ascontiguousarray(values.astype(dtype))
    return out.view(np.uint8).reshape(len(array), out.itemsize)


def _numeric(array: pa.Array, precision: int, scale: int) -> npt.NDArray[np.uint8] | None:
    """Each decimal as a numeric's binary form: digit count, weight, sign, display scale, then its
    base-10000 digits, as many for every value (leading and trailing zero digits are allowed and
    dropped by the server). None when the digits need more than 64 bits."""
    fraction_digits = -(-scale // 4)  # base-10000 digits after the point
    shift = 4 * fraction_digits - scale
    if precision > 18 or precision + shift > 19:  # the value fits an int64, shifted a uint64
        return None
    digits = -(-(precision + shift) // 4)
    words = np.frombuffer(array.buffers()[1], np.int64, 2 * len(array), array.offset * 16)
    unscaled = words[0::2]  # the low 64 bits of each 128-bit value: all of it at this precision
    if array.null_count:
        unscaled = np.where(array.is_null().to_numpy(zero_copy_only=False), 0, unscaled)
    rest = np.abs(unscaled).astype(np.uint64) * np.uint64(10 ** shift)
    out = np.empty((len(array), 4 + digits), ">i2")
    out[:, 0] = digits
    out[:, 1] = digits - fraction_digits - 1
    out[:, 2] = np.where(unscaled < 0, 0x4000, 0)
    out[:, 3] = scale
    for k in range(3 + digits, 3, -1):
        out[:, k] = rest % np.uint64(10_000)
        rest //= np.uint64(10_000)
    return out.view(np.uint8).reshape(len(array), out.itemsize * (4 + digits))


def _rows(matrix: npt.NDArray[np.generic]) -> pa.Array:
    """A binary array of the rows of ``matrix`` (a value's bytes per row)."""
    data = np.ascontiguousarray(matrix).view(np.uint8)
    rows = len(matrix)
    width = data.size // rows if rows else 0
    offsets = np.arange(rows + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])

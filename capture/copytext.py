"""COPY's text format (``COPY ... TO STDOUT``, the default format) as one string array per column.

The source spends 0.62 s of CPU printing 1,000,000 sales_order rows in this format and 0.75 s in
CSV, whose fields it checks for quoting. The format escapes a backslash and six control characters
with a backslash and a letter and writes no other escape, so a field ends at the next tab or
newline byte, ``\\N`` alone is NULL and an empty field is ''. Two loops compiled by numba split it:
one pass over the text finds each field's end, and counts each column's bytes and NULLs and
whether one of its values holds a backslash; then each column's values are copied, one memcpy each,
into Arrow buffers, once (Arrow's CSV reader, used before, wrote chunks and then combined them in a
second copy). In one thread, 100,000 rows of sales_order take 19-20 ms either way; in capture's
workers, 1,000,000-row snapshots took 1.11 s against 1.17 s (8 alternated pairs, all faster),
capture's CPU 1.39 s against 1.47 s, its peak RSS 539 MiB against 555 (BENCHMARKS.md). The rare
columns with a backslash are unescaped by Arrow. ``tests/integration/capture/test_snapshot_text.py``
and ``tests/unit/test_copytext.py`` hold the columns to what the source stores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from capture.errors import CaptureError
from totes_cdc.compiled import Bools, Bytes, Int32s, Ints, copy, kernel

_TAB, _NEWLINE, _BACKSLASH, _N = 9, 10, 92, 78
_CONTROL_ESCAPES = (("\\b", "\b"), ("\\f", "\f"), ("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"),
                    ("\\v", "\v"))
_MAX_COLUMN_BYTES = 2**31 - 1  # a string array's offsets are 32-bit


@kernel
def _rows(data: Bytes) -> int:
    rows = 0
    for byte in data:
        rows += byte == _NEWLINE
    return rows


@kernel
def _is_null(data: Bytes, start: int, end: int) -> bool:
    return end - start == 2 and data[start] == _BACKSLASH and data[start + 1] == _N


@kernel
def _split(data: Bytes, ends: Ints, sizes: Ints, nulls: Ints, escaped: Bools) -> bool:
    """Fill ``ends`` (each field's end, row by row) and each column's ``sizes`` (bytes), ``nulls``
    and ``escaped`` (a value with a backslash); false unless every row has ``len(sizes)`` fields."""
    columns = len(sizes)
    field = column = start = 0
    backslash = False
    for i in range(len(data)):
        byte = data[i]
        if byte == _BACKSLASH:
            backslash = True
        elif byte in (_TAB, _NEWLINE):
            if (byte == _NEWLINE) != (column == columns - 1) or field == len(ends):
                return False
            ends[field] = i
            if _is_null(data, start, i):
                nulls[column] += 1
            else:
                sizes[column] += i - start
                escaped[column] |= backslash
            field += 1
            column = 0 if byte == _NEWLINE else column + 1
            start = i + 1
            backslash = False
    return field == len(ends) and start == len(data)


@kernel
def _fill(data: Bytes, ends: Ints, column: int, columns: int, offsets: Int32s, values: Bytes,  # noqa: PLR0917
          valid: Bools) -> None:
    """Copy column ``column``'s values to ``values`` (``offsets`` their ends), ``valid`` where not NULL."""
    end = 0
    for row in range(len(valid)):
        field = row * columns + column
        start = ends[field - 1] + 1 if field else 0
        stop = ends[field]
        valid[row] = not _is_null(data, start, stop)
        if valid[row]:
            copy(values, end, data, start, stop - start)
            end += stop - start
        offsets[row + 1] = end


def text_columns(data: pa.Buffer, names: Sequence[str]) -> list[pa.Array]:
    """The text of ``COPY ... TO STDOUT`` (whole rows) of columns ``names``, one string array each.

    CaptureError for text whose rows do not have one field per name, or that is not UTF-8."""
    if not names:
        return []
    text = np.frombuffer(data, np.uint8)
    rows = _rows(text)
    ends = np.frombuffer(pa.allocate_buffer(rows * len(names) * 8), np.int64)
    sizes, nulls = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
    escaped = np.zeros(len(names), np.bool_)
    if not _split(text, ends, sizes, nulls, escaped):
        raise CaptureError(f"COPY's text does not have {len(names)} fields ({', '.join(names)}) on every "
                           "row")
    for name, size in zip(names, sizes.tolist(), strict=True):
        if size > _MAX_COLUMN_BYTES:
            raise CaptureError(f"column {name}: {size:,} bytes in one range, more than a string array "
                               "holds; lower capture.snapshot_chunk_rows")
    try:  # the fields end at ASCII bytes: the text is UTF-8 if every field is
        bounds = pa.py_buffer(np.array([0, len(text)], np.int64))
        pa.Array.from_buffers(pa.large_binary(), 1, [None, bounds, data]).cast(pa.large_string())
    except pa.ArrowInvalid as exc:
        raise CaptureError(f"COPY's text is not UTF-8 ({exc}): the source's encoding must be UTF8") from exc
    columns = []
    for index, (size, null_count) in enumerate(zip(sizes.tolist(), nulls.tolist(), strict=True)):
        offsets, values = pa.allocate_buffer((rows + 1) * 4), pa.allocate_buffer(size)
        offset_array = np.frombuffer(offsets, np.int32)
        offset_array[0] = 0
        valid = np.empty(rows, np.bool_)
        _fill(text, ends, index, len(names), offset_array, np.frombuffer(values, np.uint8), valid)
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
        column = pa.Array.from_buffers(pa.string(), rows, [bitmap, offsets, values], null_count=null_count)
        columns.append(_unescaped(column) if escaped[index] else column)
    return columns


def _unescaped(column: pa.Array) -> pa.Array:
    """A text-format column's values as stored. Every backslash starts an escape, so replacing the
    escaped backslashes first, left to right, with NUL (which no text value holds) reads each
    escape once: ``\\\\n`` is a backslash and an ``n``."""
    column = pc.replace_substring(column, "\\\\", "\0")
    for escape, character in _CONTROL_ESCAPES:
        column = pc.replace_substring(column, escape, character)
    return pc.replace_substring(column, "\0", "\\")


def load_kernels() -> None:
    """Load the compiled kernels (or compile them: about 1 s without a cache), as
    totes_cdc.snapshot_files.load_kernels does its own."""
    text_columns(pa.py_buffer(b"1\t\\N\tx\\\\y\n"), ["a", "b", "c"])

"""A snapshot read's lake files, built column by column from the text columns of ``COPY ... TO``.

A read of ``n`` rows becomes ``n`` contract records, op ``r`` (the raw zone's Avro container
holds their bodies) and ``n`` processed rows (the contract's meta columns, then the table's typed
columns), the same bytes and rows the stream processor writes for the same events, without a
Python object per row: the Avro bodies are joined by Arrow from per-column pieces (a value's
head a row of a byte matrix, or taken from one per distinct length), a few MB at a time, the
sequence varints computed by numpy. Joining costs by piece more than by byte: 100,000 bodies of
sales_order, 28 pieces each, take 41 ms; the same bytes in 2 pieces, 7 ms.
``tests/unit/test_snapshot_files.py`` holds the bodies to :func:`totes_cdc.contract.encode`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from totes_cdc import contract, textcolumns
from totes_cdc.contract import Column
from totes_cdc.lakefiles import Block, avro_blocks, avro_container_of

Ints = npt.NDArray[np.int64]

_EMPTY = pa.scalar(b"", pa.binary())
_EMPTY_STRINGS = pa.array([], pa.string())


def _avro_string(text: str) -> bytes:
    data = text.encode()
    return contract.avro_long(len(data)) + data


def _micros(ts: dt.datetime) -> int:
    return (ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _entry_heads(name: str, raw: pa.Array) -> pa.Array:
    """What comes before each value in the image's map: the column's name, the union branch (0 null,
    1 string) and the string's length. Without nulls and with values under 64 bytes (a one-byte
    length), the rows of one byte matrix; else one per distinct length, taken for every row."""
    key = _avro_string(name)
    lengths = pc.binary_length(raw)
    n = len(raw)
    if n and not raw.null_count:
        sizes = lengths.to_numpy()
        if sizes.max() < 64:  # 100,000 reads of sales_order: 1.6 ms a column taken, 0.4-0.7 as a matrix
            return _matrix_heads(key + b"\x02\x00", sizes)
    lengths = lengths.dictionary_encode()
    heads = pa.array([*(key + b"\x02" + contract.avro_long(size) for size in lengths.dictionary.to_pylist()),
                      key + b"\x00"], pa.binary())
    return heads.take(pc.fill_null(lengths.indices, len(lengths.dictionary)))


def _matrix_heads(head: bytes, sizes: npt.NDArray[np.int32]) -> pa.Array:
    """``head`` once per row, its last byte the zig-zag varint of the row's length (under 64).

    The matrix is in Arrow's memory, which capture's allocator keeps for the next range, and is
    filled by doubling copies of the rows written so far. ``np.tile`` took fresh memory from the
    C allocator for each column of each range; in capture's four workers those pages cost page
    faults and system CPU. Side by side, 1,000,000-row snapshots alternated with the code before,
    16 pairs: faster in 13, system CPU 0.49-0.59 -> 0.41-0.46 s (BENCHMARKS.md)."""
    n, width = len(sizes), len(head)
    data = pa.allocate_buffer(n * width)
    flat = np.frombuffer(data, np.uint8)
    flat[:width] = np.frombuffer(head, np.uint8)
    done = width
    while done < len(flat):
        step = min(done, len(flat) - done)
        flat[done:done + step] = flat[:step]
        done += step
    np.multiply(sizes, 2, out=flat.reshape(n, width)[:, -1], casting="unsafe")
    offsets = pa.allocate_buffer((n + 1) * 4)
    np.multiply(np.arange(n + 1, dtype=np.int32), width, out=np.frombuffer(offsets, np.int32))
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, data])


def varints(values: Ints) -> pa.Array:
    """The Avro longs of ``values`` (zig-zag, then base-128 varint), one binary value each."""
    zigzag = ((values << 1) ^ (values >> 63)).astype(np.uint64)
    size = np.ones(len(zigzag), np.int64)
    for shift in range(7, 64, 7):
        size += zigzag >= np.uint64(1) << np.uint64(shift)
    width = int(size.max()) if len(size) else 1
    groups = np.empty((len(zigzag), width), np.uint8)
    for k in range(width):
        more = np.where(k < size - 1, 0x80, 0).astype(np.uint8)
        groups[:, k] = ((zigzag >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | more
    data = groups.reshape(-1) if size.min() == width else groups[np.arange(width) < size[:, None]]
    offsets = np.zeros(len(size) + 1, np.int32)
    np.cumsum(size, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(size), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


@dataclass(frozen=True)
class RecordBodies:
    """The Avro bodies (no single-object header) of ``rows`` reads, as the pieces each one is
    joined from: byte strings the same for every read, or one value per read."""

    parts: tuple[pa.Array | pa.Scalar, ...]
    rows: int

    def join(self, first: int = 0, stop: int | None = None) -> pa.Array:
        """The bodies of reads ``first`` to ``stop`` (all, by default)."""
        count = (self.rows if stop is None else stop) - first
        pieces = [p.slice(first, count) if isinstance(p, pa.Array) else p for p in self.parts]
        joined: pa.Array = pc.binary_join_element_wise(*pieces, _EMPTY)
        return joined

    @property
    def nbytes(self) -> int:
        """About the bodies' size: their pieces' bytes."""
        return sum(p.nbytes if isinstance(p, pa.Array) else self.rows * len(p.as_py()) for p in self.parts)


def record_bodies(schema: str, table: str, columns: Sequence[Column], *, lsn: int, seqs: Ints,
                  taken_at: dt.datetime, values: Sequence[pa.Array]) -> RecordBodies:
    """The Avro bodies of the reads: ``seqs`` their positions at ``lsn``, ``values`` the text of
    each column (null: SQL NULL), in column order."""
    head = b"".join((contract.avro_long(contract.CONTRACT_VERSION),
                     contract.avro_long(contract.OPS.index(contract.OP_SNAPSHOT)),
                     _avro_string(schema), _avro_string(table), contract.avro_long(lsn)))
    column_array = b"".join((contract.avro_long(len(columns)), *(
        _avro_string(c.name) + _avro_string(c.type) + (b"\x01" if c.key else b"\x00") for c in columns),
        b"\x00")) if columns else b"\x00"
    # xid null, commit time, snapshot true, the columns, before null, after: branch 1 and its count
    middle = b"".join((b"\x00", contract.avro_long(_micros(taken_at)), b"\x01", column_array, b"\x00",
                       b"\x02", contract.avro_long(len(columns)) if columns else b""))
    parts: list[pa.Array | pa.Scalar] = [pa.scalar(head, pa.binary()), varints(seqs),
                                         pa.scalar(middle, pa.binary())]
    for column, text in zip(columns, values, strict=True):
        raw = text.cast(pa.binary())
        parts += [_entry_heads(column.name, raw), pc.fill_null(raw, _EMPTY)]
    parts.append(pa.scalar(b"\x00\x00", pa.binary()))  # end of the map; unchanged: empty array
    return RecordBodies(tuple(parts), len(seqs))


def bodies_and_sizes(bodies: pa.Array) -> tuple[memoryview, Ints]:
    """The bodies laid end to end, and each one's size (what the raw zone's container writer takes)."""
    offsets = np.frombuffer(bodies.buffers()[1], np.int32, len(bodies) + 1, bodies.offset * 4)
    data = memoryview(bodies.buffers()[2])[int(offsets[0]):int(offsets[-1])]
    return data, np.diff(offsets).astype(np.int64)


# The bodies are joined and deflated about 4 MB at a time, not a file's worth at once. Capture's
# workers run side by side, and a whole file's bodies (67 MB for 100,000 reads of sales_order)
# came back from the allocator as fresh pages, which the kernel zeroes: four threads building
# 100,000-read files of sales_order spent 52-71 ms of system CPU a file on the raw container, and
# 8-11 ms in parts of about 4 MB (5,236 reads), the same user CPU within the spread, the same bytes.
_JOIN_BYTES = 4_000_000


def raw_container(bodies: RecordBodies, key: str) -> bytes:
    """The raw zone's Avro container of the bodies, the same bytes as
    :func:`totes_cdc.lakefiles.avro_container` of all of them at once."""
    step = max(1, _JOIN_BYTES * bodies.rows // max(bodies.nbytes, 1))
    blocks: list[Block] = []
    first = stop = 0
    while first < bodies.rows:
        stop = min(max(stop, first) + step, bodies.rows)  # a part without a whole block grows
        made, done = avro_blocks(*bodies_and_sizes(bodies.join(first, stop)), final=stop == bodies.rows)
        blocks += made
        first += done
    return avro_container_of(blocks, key)


def processed_table(columns: Sequence[Column], *, lsn: int, seqs: Ints, taken_at: dt.datetime,
                    values: Sequence[pa.Array]) -> pa.Table:
    """The processed rows of the reads: the meta columns, then each column typed from its text.

    ContractError for a value its column's Arrow type cannot hold.
    """
    n = len(seqs)
    arrays = [
        pa.array([contract.OP_SNAPSHOT]).take(pa.array(np.zeros(n, np.int64))),
        pa.array(np.full(n, lsn, np.int64)),
        pa.array(seqs),
        pa.nulls(n, pa.int64()),
        pa.array(np.full(n, _micros(taken_at), np.int64), pa.timestamp("us", tz="UTC")),
        pa.array(np.ones(n, np.bool_)),
        pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), _EMPTY_STRINGS),
        *(textcolumns.typed(text, column.type) for column, text in zip(columns, values, strict=True)),
    ]
    return pa.Table.from_arrays(arrays, schema=contract.parquet_schema(list(columns)))

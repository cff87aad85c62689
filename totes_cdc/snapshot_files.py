"""A snapshot read's lake files, built column by column from the text columns of ``COPY ... TO``.

A read of ``n`` rows becomes ``n`` contract records, op ``r`` (the raw zone's Avro container
holds their bodies) and ``n`` processed rows (the contract's meta columns, then the table's typed
columns), the same bytes and rows the stream processor writes for the same events, without a
Python object per row: the Avro bodies are written by small loops compiled by numba, a few MB at
a time: first each body's size, then, column by column, each read's map entry at its body's
cursor, each value one memcpy from the column's Arrow buffer. 100,000 bodies of sales_order and
their container take 51 ms, where Arrow's ``binary_join_element_wise`` of the same 28 pieces a
body (joining costs by piece more than by byte) and its heads and varints took 73 ms; a
1,000,000-row snapshot uses 0.3 s less of capture's CPU (BENCHMARKS.md).
``tests/unit/test_snapshot_files.py`` holds the bodies to :func:`totes_cdc.contract.encode`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from totes_cdc import contract, textcolumns
from totes_cdc.compiled import Bytes, Ints, copy, kernel
from totes_cdc.contract import Column
from totes_cdc.lakefiles import Block, avro_blocks, avro_container_of

_EMPTY_STRINGS = pa.array([], pa.string())
_ALL_VALID = np.zeros(0, np.bool_)  # a column without nulls: no validity to read
_NO_BYTES = np.zeros(0, np.uint8)


def _avro_string(text: str) -> bytes:
    data = text.encode()
    return contract.avro_long(len(data)) + data


def _micros(ts: dt.datetime) -> int:
    return (ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


@kernel
def _long_size(value: int) -> int:
    """The bytes of the Avro long (zig-zag, then base-128 varint) of ``value``."""
    zigzag = (value << 1) ^ (value >> 63)
    size = 1
    while zigzag < 0 or zigzag >= 0x80:  # as unsigned: a negative zig-zag has its top bit set
        zigzag = (zigzag >> 7) & 0x01FFFFFFFFFFFFFF
        size += 1
    return size


@kernel
def _put_long(out: Bytes, at: int, value: int) -> int:
    """Write the Avro long of ``value`` at ``at``: where it ends."""
    zigzag = (value << 1) ^ (value >> 63)
    while zigzag < 0 or zigzag >= 0x80:
        out[at] = (zigzag & 0x7F) | 0x80
        zigzag = (zigzag >> 7) & 0x01FFFFFFFFFFFFFF
        at += 1
    out[at] = zigzag
    return at + 1


@kernel
def _sizes(sizes: Ints, seqs: Ints, fixed: int) -> None:
    for i in range(len(sizes)):
        sizes[i] = fixed + _long_size(seqs[i])


@kernel
def _add_value_sizes(sizes: Ints, offsets: npt.NDArray[np.int32], valid: npt.NDArray[np.bool_]) -> None:
    every = len(valid) == 0
    for i in range(len(sizes)):
        if every or valid[i]:
            length = offsets[i + 1] - offsets[i]
            sizes[i] += length + _long_size(length)


@kernel
def _put_heads(out: Bytes, at: Ints, head: Bytes, seqs: Ints,
               middle: Bytes) -> None:
    for i in range(len(at)):
        copy(out, at[i], head, 0, len(head))
        end = _put_long(out, at[i] + len(head), seqs[i])
        copy(out, end, middle, 0, len(middle))
        at[i] = end + len(middle)


@kernel
def _put_values(out: Bytes, at: Ints, key: Bytes,  # noqa: PLR0917
                offsets: npt.NDArray[np.int32], data: Bytes,
                valid: npt.NDArray[np.bool_]) -> None:
    """Each read's map entry of one column: its name, the union's branch (0 null, 1 string: the
    zig-zag 2) and the string. (numba compiles positional parameters: no keyword-only ones here.)"""
    every = len(valid) == 0
    for i in range(len(at)):
        end = at[i]
        copy(out, end, key, 0, len(key))
        end += len(key)
        if every or valid[i]:
            start = offsets[i]
            length = offsets[i + 1] - start
            out[end] = 2
            end = _put_long(out, end + 1, length)
            copy(out, end, data, start, length)
            at[i] = end + length
        else:
            out[end] = 0
            at[i] = end + 1


@kernel
def _put_ends(out: Bytes, at: Ints) -> None:
    for i in range(len(at)):
        out[at[i]] = 0  # the map's end
        out[at[i] + 1] = 0  # unchanged: an empty array


@dataclass(frozen=True)
class _Values:
    """A column's text as the kernels read it: a binary array's offsets and bytes, and which
    values are not null (empty: all of them)."""

    offsets: npt.NDArray[np.int32]
    data: Bytes
    valid: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, text: pa.Array) -> _Values:
        raw = text.cast(pa.binary())
        _, offsets, data = raw.buffers()
        return cls(np.frombuffer(offsets, np.int32, len(raw) + 1, raw.offset * 4),
                   _NO_BYTES if data is None else np.frombuffer(data, np.uint8),
                   np.asarray(raw.is_valid()) if raw.null_count else _ALL_VALID)


@dataclass(frozen=True)
class RecordBodies:
    """The Avro bodies (no single-object header) of ``len(seqs)`` reads: the bytes the same for
    every read (``head``, ``middle``, each column's ``keys``), each read's sequence and values,
    and each body's size."""

    head: Bytes
    seqs: Ints
    middle: Bytes
    keys: tuple[Bytes, ...]
    values: tuple[_Values, ...]
    sizes: Ints

    @property
    def rows(self) -> int:
        return len(self.seqs)

    def laid(self, first: int = 0, stop: int | None = None) -> tuple[memoryview, Ints]:
        """The bodies of reads ``first`` to ``stop`` (all, by default) laid end to end, in Arrow's
        memory (which capture's allocator keeps for the next part), and each one's size."""
        sizes = self.sizes[first:stop]
        at = np.zeros(len(sizes), np.int64)
        np.cumsum(sizes[:-1], out=at[1:])
        total = int(at[-1] + sizes[-1]) if len(sizes) else 0
        buffer = pa.allocate_buffer(total)
        out = np.frombuffer(buffer, np.uint8)
        stop = first + len(sizes)
        _put_heads(out, at, self.head, self.seqs[first:stop], self.middle)
        for key, values in zip(self.keys, self.values, strict=True):
            _put_values(out, at, key, values.offsets[first:stop + 1], values.data,
                        values.valid[first:stop] if len(values.valid) else values.valid)
        _put_ends(out, at)
        return memoryview(buffer), sizes


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
    keys = tuple(np.frombuffer(_avro_string(c.name), np.uint8) for c in columns)
    texts = tuple(_Values.of(text) for text in values)
    seqs = np.ascontiguousarray(seqs, np.int64)
    sizes = np.empty(len(seqs), np.int64)
    _sizes(sizes, seqs, len(head) + len(middle) + sum(len(key) + 1 for key in keys) + 2)
    for text in texts:
        _add_value_sizes(sizes, text.offsets, text.valid)
    return RecordBodies(np.frombuffer(head, np.uint8), seqs, np.frombuffer(middle, np.uint8), keys, texts,
                        sizes)


# The bodies are joined and deflated about 4 MB at a time, not a file's worth at once. Capture's
# workers run side by side, and a whole file's bodies (67 MB for 100,000 reads of sales_order)
# came back from the allocator as fresh pages, which the kernel zeroes: four threads building
# 100,000-read files of sales_order spent 52-71 ms of system CPU a file on the raw container, and
# 8-11 ms in parts of about 4 MB (5,236 reads), the same user CPU within the spread, the same bytes.
_JOIN_BYTES = 4_000_000


def load_kernels() -> None:
    """Load the compiled kernels (compile them, without a cache: about 0.6 s) for every kind of
    column, with nulls or without, all null. Capture calls it before it creates a slot: the
    exported snapshot, which holds the source's horizon back, then waits for no compiler, and its
    workers do not queue for the same compilation."""
    columns = [Column("a", "integer", True), Column("b", "text"), Column("c", "text")]
    values = [pa.array(["1", "2"]), pa.array(["x", None]), pa.array([None, None], pa.string())]
    record_bodies("public", "t", columns, lsn=1, seqs=np.arange(2), taken_at=dt.datetime.now(dt.UTC),
                  values=values).laid()


def raw_container(bodies: RecordBodies, key: str) -> bytes:
    """The raw zone's Avro container of the bodies, the same bytes as
    :func:`totes_cdc.lakefiles.avro_container` of all of them at once."""
    step = max(1, _JOIN_BYTES * bodies.rows // max(int(bodies.sizes.sum()), 1))
    blocks: list[Block] = []
    first = stop = 0
    while first < bodies.rows:
        stop = min(max(stop, first) + step, bodies.rows)  # a part without a whole block grows
        made, done = avro_blocks(*bodies.laid(first, stop), final=stop == bodies.rows)
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

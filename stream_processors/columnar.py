"""Whole-batch decoding: the contract's Avro bodies of a batch straight to typed Arrow columns.

The per-event path (records.py: fastavro per user record, a dict and a ChangeEvent per event, one
Python value per column) costs more per event than capture spends producing it. Here every field
of every event is read at once: the bodies are laid end to end in one buffer and walked in
lockstep with numpy (a vector of read positions, one per event), values never become Python
objects (their bytes are gathered into Arrow string arrays, then cast to the column's Arrow type),
and only what repeats (table names, column lists, column names) is decoded in Python, once.

It covers the encoding capture writes (maps and arrays in one block, longs in their shortest
form, every image key a column of the event, in column order) and values in PostgreSQL's
canonical text form. Anything else in
a batch (a poison record, a value needing a per-value parser that fails, a column whose type
changes inside the batch, ...) raises :class:`Irregular`, and the batch goes through the
per-event path, whose result this path reproduces exactly (a test compares the files).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass

import fastavro
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from totes_cdc import contract, kpl, textcolumns
from totes_cdc.contract import Column, ContractError

from .records import ParsedRecord, Poison, TypedEvent, parse_record

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# Single-object encoding's marker and the contract schema's fingerprint, ahead of every body.
_HEADER = contract.encode(contract.ChangeEvent(
    op=contract.OP_TRUNCATE, schema="", table="", lsn=0, seq=0, commit_ts=dt.datetime.now(dt.UTC),
    columns=()))[:10]
_MAX_VARINT = 9  # bytes: 63 bits, every long below 2**62 in magnitude; longer ones go per event
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# commit_ts as fastavro reads it (timestamp-micros) is a datetime: a value outside its range is poison
_MIN_MICROS = (dt.datetime.min.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_MICROS = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_MICROS_PER_DAY = 86_400_000_000
_ZIGZAG = np.array([(z >> 1) ^ -(z & 1) for z in range(256)], np.int64)  # one-byte varints, decoded
_COLUMNS_SCHEMA = fastavro.parse_schema({"type": "array", "items": next(
    f["type"]["items"] for f in contract.AVRO_SCHEMA["fields"] if f["name"] == "columns")})
_NAMES_SCHEMA = fastavro.parse_schema({"type": "record", "name": "Names", "fields": [
    {"name": "schema", "type": "string"}, {"name": "table", "type": "string"}]})
# The contract version this decoder reads field by field (the parsing canonical form's fingerprint:
# docs aside, any change to the schema changes it); another version is decoded event by event.
_LAYOUT = "ffea620a62086661"


class Irregular(Exception):
    """Something in the batch that only the per-event path handles."""


@dataclass(frozen=True)
class DecodedBatch:
    """The events of a batch, column by column, in arrival order."""

    buf: bytes  # the user records' Avro bodies (without their single-object header) end to end
    body_start: Ints  # where each event's body starts in buf
    body_end: Ints
    op: Ints  # index into contract.OPS
    lsn: Ints
    seq: Ints
    xid: Ints
    xid_null: Bools
    commit_micros: Ints
    snapshot: Bools
    table: Ints  # index into tables
    tables: list[tuple[str, str]]  # (schema, table)
    shape: Ints  # index into shapes
    shapes: list[tuple[Column, ...]]  # the column lists events carry
    row: Ints  # position of the event among the events of its table
    values: dict[tuple[int, str], pa.Array]  # (table, column) -> typed values, one per event of the table

    def __len__(self) -> int:
        return len(self.op)

    @property
    def day(self) -> Ints:
        """UTC commit date of each event, as days since the epoch."""
        return self.commit_micros // _MICROS_PER_DAY


class _Reader:
    """A read position per event over the bodies laid end to end."""

    def __init__(self, payloads: Sequence[bytes]) -> None:
        if not all(p.startswith(_HEADER) for p in payloads):
            raise Irregular("not a change event of this contract version")
        # The bodies alone, so that a partition holding the whole batch is already the raw file's data.
        bodies = [memoryview(p)[len(_HEADER):] for p in payloads]
        lengths = np.fromiter(map(len, bodies), np.int64, len(bodies))
        self.buf = b"".join(bodies)
        self.arr = np.frombuffer(self.buf + bytes(_MAX_VARINT), np.uint8)
        self.words = _words(self.arr, len(self.buf))
        self.end = np.cumsum(lengths)
        self.body_start = self.end - lengths
        self.pos = self.body_start.copy()
        self.last = len(self.buf)  # reads past the end are clamped here, then failed by check()

    def byte(self, idx: Ints) -> Ints:
        at = self.pos[idx]
        self.pos[idx] = at + 1
        byte: Ints = self.arr[np.minimum(at, self.last)].astype(np.int64)
        return byte

    def long(self, idx: Ints) -> Ints:
        """Avro longs (zig-zag varints) at the positions of events ``idx``."""
        at = self.pos[idx]
        first = self.arr[np.minimum(at, self.last)]
        if first.max(initial=0) < 0x80:  # the usual case: every value below 64 in magnitude
            self.pos[idx] = at + 1
            one_byte: Ints = _ZIGZAG[first]
            return one_byte
        acc = np.zeros(len(idx), np.int64)
        size = np.zeros(len(idx), np.int64)
        more = np.ones(len(idx), np.bool_)
        for k in range(_MAX_VARINT):
            byte = self.arr[np.minimum(at + k, self.last)].astype(np.int64)
            if k and (more & (byte == 0)).any():
                # a longer form than needed: fastavro reads it, but the raw file, made of the bodies
                # as received, would then differ from what the per-event path writes
                raise Irregular("varint not in its shortest form")
            acc[more] |= (byte[more] & 0x7F) << (7 * k)
            size += more
            more &= byte >= 0x80
            if not more.any():
                break
        else:
            raise Irregular("varint longer than the per-batch path reads")
        self.pos[idx] = at + size
        value: Ints = (acc >> 1) ^ -(acc & 1)
        return value

    def string(self, idx: Ints) -> tuple[Ints, Ints]:
        """(start, length) of the strings (or bytes) at the positions of events ``idx``."""
        size = self.long(idx)
        if (size < 0).any() or (size > self.end[idx] - self.pos[idx]).any():
            raise Irregular("string length out of range")
        start = self.pos[idx]
        self.pos[idx] = start + size
        return start, size

    def count(self, idx: Ints) -> Ints:
        """Item count of an array or map written as one block (the end block read later)."""
        count = self.long(idx)
        if (count < 0).any() or (count > self.end[idx] - self.pos[idx]).any():
            raise Irregular("block count out of range or a sized block")
        return count

    def block_end(self, idx: Ints) -> None:
        if (self.long(idx) != 0).any():
            raise Irregular("array or map in more than one block")

    def union(self, idx: Ints) -> Ints:
        """The branch (0 or 1) of a two-branch union: one byte, 0 or 2 (zig-zag)."""
        byte = self.byte(idx)
        if ((byte != 0) & (byte != 2)).any():
            raise Irregular("union branch out of range")
        return byte >> 1

    def check(self) -> None:
        """Every event read exactly to its end (no truncated or padded body)."""
        if not (self.pos == self.end).all():
            raise Irregular("an event's body does not end where its record does")


def _ragged(start: Ints, size: Ints) -> Ints:
    """Indices of the concatenated ranges [start, start + size)."""
    offsets = np.cumsum(size) - size
    return np.repeat(start - offsets, size) + np.arange(int(size.sum()))


def _words(padded: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint64]:
    """The 8 bytes from each of the first ``size`` + 1 positions of ``padded`` (at least 8 bytes
    longer) as one little-endian integer: a view, nothing copied."""
    return np.ndarray((size + 1,), "<u8", padded, 0, (1,))


def _same_bytes(a: npt.NDArray[np.uint64], a_start: Ints, a_size: Ints, *,
                b: npt.NDArray[np.uint64], b_start: Ints, b_size: Ints) -> bool:
    """Whether every range a[a_start : a_start + a_size] holds the bytes of its b range, compared
    8 bytes at a time."""
    if not (a_size == b_size).all():
        return False
    for k in range(0, int(a_size.max(initial=0)), 8):
        at = np.flatnonzero(a_size > k)
        mask = np.uint64(0xFFFF_FFFF_FFFF_FFFF) >> (
            64 - 8 * np.minimum(a_size[at] - k, 8)).astype(np.uint64)
        if ((a[a_start[at] + k] ^ b[b_start[at] + k]) & mask).any():
            return False
    return True


def _key_of(buf: bytes, start: Ints, end: Ints) -> tuple[Ints, list[bytes]]:
    """Index of each byte range among the distinct ranges (in first-seen order), and those."""
    index: dict[bytes, int] = {}
    ids = [index.setdefault(buf[s:e], len(index)) for s, e in zip(start.tolist(), end.tolist(),
                                                                  strict=True)]
    return np.array(ids, np.int64), list(index)


@dataclass
class _Image:
    """The entries of the image each event's processed row holds, flattened: entry k belongs to
    event ``event[k]`` and is the ``position[k]``-th of its map."""

    event: Ints
    position: Ints
    key_start: Ints
    key_size: Ints
    null: Bools
    value_start: Ints
    value_size: Ints


def _map(reader: _Reader, idx: Ints, used: Bools) -> _Image:
    """Read a ["null", map<["null", string]>] at events ``idx``; keep the entries where ``used``."""
    parts: list[list[Ints]] = [[] for _ in range(7)]
    present = idx[reader.union(idx) == 1]
    count = reader.count(present)
    for position in range(int(count.max(initial=0))):
        at = present[count > position]
        key_start, key_size = reader.string(at)
        has_value = reader.union(at) == 1
        value_start = np.zeros(len(at), np.int64)
        value_size = np.zeros(len(at), np.int64)
        value_start[has_value], value_size[has_value] = reader.string(at[has_value])
        keep = used[at]
        for part, values in zip(parts, (at, np.full(len(at), position), key_start, key_size,
                                        ~has_value, value_start, value_size), strict=True):
            part.append(values[keep])
    reader.block_end(present[count > 0])
    event, position_, key_start, key_size, null, value_start, value_size = (
        np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts)
    return _Image(event, position_, key_start, key_size, null.astype(np.bool_), value_start,
                  value_size)


def _shapes(reader: _Reader, everyone: Ints) -> tuple[Ints, list[tuple[Column, ...]]]:
    start = reader.pos.copy()
    count = reader.count(everyone)
    for position in range(int(count.max(initial=0))):
        at = everyone[count > position]
        reader.string(at)
        reader.string(at)
        if (reader.byte(at) > 1).any():
            raise Irregular("boolean out of range")
    reader.block_end(everyone[count > 0])
    shape, distinct = _key_of(reader.buf, start, reader.pos)
    shapes = []
    for data in distinct:
        try:
            items = fastavro.schemaless_reader(io.BytesIO(data), _COLUMNS_SCHEMA, None)
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise Irregular(f"column list: {exc!r}") from exc
        if not isinstance(items, list):
            raise Irregular("column list")
        columns = tuple(Column(c["name"], c["type"], c["key"]) for c in items)
        if len({c.name for c in columns}) != len(columns):
            raise Irregular("a column named twice")
        shapes.append(columns)
    return shape, shapes


def _strings(reader: _Reader, start: Ints, size: Ints, valid: Bools) -> pa.Array:
    """A string array of the byte ranges (null where not ``valid``), its UTF-8 checked."""
    size = np.where(valid, size, 0)
    offsets = np.zeros(len(size) + 1, np.int32)
    np.cumsum(size, out=offsets[1:])
    data = reader.arr[_ragged(start[valid], size[valid])]
    array = pa.Array.from_buffers(pa.string(), len(size), [
        pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(offsets),
        pa.py_buffer(data)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise Irregular(f"not UTF-8: {exc}") from exc
    return array


def typed(text: pa.Array, pg_type: str) -> pa.Array:
    """:func:`totes_cdc.textcolumns.typed`; a value the type cannot hold sends the batch event by event."""
    try:
        return textcolumns.typed(text, pg_type)
    except ContractError as exc:
        raise Irregular(str(exc)) from exc


def decode(payloads: Sequence[bytes]) -> DecodedBatch:
    """Decode and type the single-object encoded change events of a batch, in order."""
    if contract.SCHEMA_FINGERPRINT.hex() != _LAYOUT:
        raise Irregular("a contract schema this decoder does not know")
    reader = _Reader(payloads)
    everyone = np.arange(len(payloads))
    reader.long(everyone)  # version: carried in the raw zone, not in the processed rows
    op = reader.long(everyone)
    if ((op < 0) | (op >= len(contract.OPS))).any():
        raise Irregular("unknown operation")
    names_start = reader.pos.copy()
    reader.string(everyone)
    reader.string(everyone)
    table, distinct_tables = _key_of(reader.buf, names_start, reader.pos)
    tables = []
    for data in distinct_tables:
        try:
            decoded = fastavro.schemaless_reader(io.BytesIO(data), _NAMES_SCHEMA, None)
        except UnicodeDecodeError as exc:
            raise Irregular("table name not UTF-8") from exc
        if not isinstance(decoded, dict):
            raise Irregular("table name")
        tables.append((decoded["schema"], decoded["table"]))
    lsn = reader.long(everyone)
    seq = reader.long(everyone)
    xid_null = reader.union(everyone) == 0
    xid = np.zeros(len(everyone), np.int64)
    xid[~xid_null] = reader.long(everyone[~xid_null])
    commit_micros = reader.long(everyone)
    if ((commit_micros < _MIN_MICROS) | (commit_micros > _MAX_MICROS)).any():
        raise Irregular("commit time outside the datetime range")
    snapshot = reader.byte(everyone)
    if (snapshot > 1).any():
        raise Irregular("boolean out of range")
    shape, shapes = _shapes(reader, everyone)
    is_delete = op == contract.OPS.index(contract.OP_DELETE)
    before = _map(reader, everyone, is_delete)
    after = _map(reader, everyone, ~is_delete)
    if (reader.count(everyone) != 0).any():  # `unchanged`: TOAST columns left out of `after`
        raise Irregular("unchanged TOAST columns")
    reader.check()
    image = _Image(*(np.concatenate(pair) for pair in zip(
        (before.event, before.position, before.key_start, before.key_size, before.null,
         before.value_start, before.value_size),
        (after.event, after.position, after.key_start, after.key_size, after.null,
         after.value_start, after.value_size), strict=True)))
    row = np.zeros(len(everyone), np.int64)
    for t in range(len(tables)):
        members = table == t
        row[members] = np.arange(int(members.sum()))
    values = _values(reader, image, table=table, tables=tables, shape=shape, shapes=shapes, row=row)
    return DecodedBatch(reader.buf, reader.body_start, reader.end, op, lsn, seq, xid, xid_null,
                        commit_micros, snapshot.astype(np.bool_), table, tables, shape, shapes,
                        row, values)


def _values(reader: _Reader, image: _Image, *, table: Ints, tables: list[tuple[str, str]],
            shape: Ints, shapes: list[tuple[Column, ...]], row: Ints) -> dict[tuple[int, str], pa.Array]:
    """The typed values of every column of every table, one per event of the table.

    An event's image holds every column of its list, or only its key columns (a delete's old
    image), in list order: entry k of an image names column k of that list, which is checked.
    """
    names = list(dict.fromkeys(c.name for columns in shapes for c in columns))
    name_id = {name: i for i, name in enumerate(names)}
    encoded = [name.encode() for name in names]
    name_size = np.array([len(e) for e in encoded] + [0], np.int64)
    name_start = np.cumsum(name_size) - name_size
    lookup: list[int] = []
    offsets = np.zeros((len(shapes), 2), np.int64)  # where each shape's [all, key] names start
    sizes = np.zeros((len(shapes), 2), np.int64)
    for s, columns in enumerate(shapes):
        for k, listed in enumerate((columns, [c for c in columns if c.key])):
            offsets[s, k], sizes[s, k] = len(lookup), len(listed)
            lookup += [name_id[c.name] for c in listed]
    count = np.bincount(image.event, minlength=len(shape))
    all_columns = count == sizes[shape, 0]
    if ((count > 0) & ~all_columns & (count != sizes[shape, 1])).any():
        raise Irregular("an image that is neither every column nor the key columns")
    kind = np.where(all_columns[image.event], 0, 1)
    expected = np.array([*lookup, len(names)], np.int64)[
        offsets[shape[image.event], kind] + image.position]
    joined = b"".join(encoded)
    if not _same_bytes(reader.words, image.key_start, image.key_size,
                       b=_words(np.frombuffer(joined + bytes(8), np.uint8), len(joined)),
                       b_start=name_start[expected], b_size=name_size[expected]):
        raise Irregular("image keys not in column order")
    # One slot per column of a table per event of that table, grouped by table and column type:
    # all values are gathered and checked in one pass, and each group is typed in one cast.
    per_table = np.bincount(table, minlength=len(tables)).tolist()
    base = np.zeros((len(tables), len(names) + 1), np.int64)
    groups: list[tuple[int, str, list[str], int]] = []  # table, type, columns, first slot
    slots = 0
    for t in range(len(tables)):
        types: dict[str, str] = {}
        for s in np.unique(shape[table == t]).tolist():
            for column in shapes[s]:
                if types.setdefault(column.name, column.type) != column.type:
                    raise Irregular("a column whose type changes inside the batch")
        for pg_type in dict.fromkeys(types.values()):
            named = [name for name, of in types.items() if of == pg_type]
            groups.append((t, pg_type, named, slots))
            for name in named:
                base[t, name_id[name]] = slots
                slots += per_table[t]
    slot = base[table[image.event], expected] + row[image.event]
    start = np.zeros(slots, np.int64)
    size = np.zeros(slots, np.int64)
    valid = np.zeros(slots, np.bool_)
    start[slot], size[slot], valid[slot] = image.value_start, image.value_size, ~image.null
    text = _strings(reader, start, size, valid)
    values: dict[tuple[int, str], pa.Array] = {}
    for t, pg_type, named, first in groups:
        rows = per_table[t]
        group = typed(text.slice(first, rows * len(named)), pg_type)
        for n, name in enumerate(named):
            values[t, name] = group.slice(n * rows, rows)
    return values


@dataclass(frozen=True)
class ParsedBatch:
    """What a batch's Kinesis records held: its good events, decoded whole when the batch is
    regular and else event by event, and its poison user records, in order."""

    events: DecodedBatch | list[TypedEvent]
    poison: tuple[Poison, ...]


def parse_batch(records: Sequence[tuple[bytes, str, str]]) -> ParsedBatch:
    """De-aggregate, decode and type the Kinesis records ``(data, partition key, sequence number)``
    of a batch: whole when it is regular, else record by record (records.parse_record)."""
    try:
        payloads = [payload for data, _, _ in records for payload in kpl.payloads(data)]
        return ParsedBatch(decode(payloads), ())
    except (Irregular, kpl.AggregationError, UnicodeDecodeError):
        parsed: list[ParsedRecord] = [parse_record(data, key, sequence_number)
                                      for data, key, sequence_number in records]
        return ParsedBatch([e for p in parsed for e in p.events],
                           tuple(poison for p in parsed for poison in p.poison))

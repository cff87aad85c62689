"""The change-event contract: the one wire format every stage speaks.

capture/ encodes change events with it, stream_processors/ decodes them and writes Parquet with its
type mapping, warehouse_loader/ reads that Parquet. Nothing else defines an event.

An event is encoded as Avro *single-object encoding* (marker ``C3 01``, the 8-byte CRC-64-AVRO
fingerprint of the writer schema, then the Avro body), so a reader can tell a record written with
an unknown schema version from a corrupt one and send either to the dead-letter location.

Values travel as PostgreSQL's text representation (what pgoutput sends); each event carries its
columns' type names, so a consumer types them without asking the source, and a column added at the
source simply appears in the next event.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import fastavro
import pyarrow as pa
from fastavro.schema import fingerprint, to_parsing_canonical_form

from totes_cdc.errors import TerminalError

CONTRACT_VERSION = 1

OP_SNAPSHOT = "r"
OP_INSERT = "c"
OP_UPDATE = "u"
OP_DELETE = "d"
OP_TRUNCATE = "t"
OPS = (OP_SNAPSHOT, OP_INSERT, OP_UPDATE, OP_DELETE, OP_TRUNCATE)

# Positions. (lsn, seq) orders the versions of a row and (schema, table, lsn, seq) identifies an
# event. lsn is the LSN of the commit record of a change's transaction (pgoutput's BEGIN final_lsn),
# or a snapshot's consistent point, where a transaction committed after the snapshot may start
# its commit record. So seq is split into disjoint ranges, and snapshot reads sort first:
#   seq >= 1                  a streamed change: its 1-based position in its transaction;
#   -2^31 < seq < 0           a snapshot read: the row's ordinal in its table minus 2^31
#                             (ordinals 1 .. 2^31 - 1), before every change committed at its lsn;
#   seq <= -2^31              a truncate tombstone (the warehouse's, never on the stream):
#                             -(truncate seq * 2^31 + row id), row id in [0, 2^31); the warehouse's
#                             fact_version_seq() maps it to the truncate's seq, and a snapshot read
#                             to 0;
#   seq == 0                  a ghost tombstone (the warehouse's, never on the stream): a row live
#                             below a completed snapshot read's lsn that the read did not see; after
#                             every read at that lsn, before every change committed there.
SEQ_RANGE = 2**31
GHOST_SEQ = 0
TOMBSTONE_SEQ_FACTOR = SEQ_RANGE

_VALUES = {"type": "map", "values": ["null", "string"]}

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ChangeEvent",
    "namespace": "totes_cdc",
    "doc": "One row change (or snapshot read, or truncate) of a source table.",
    "fields": [
        {"name": "version", "type": "int", "doc": "Contract version."},
        {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": list(OPS)},
         "doc": "r snapshot read, c insert, u update, d delete, t truncate."},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "lsn", "type": "long",
         "doc": "LSN of the commit record of the source transaction; for a snapshot read, the "
                "snapshot's consistent point."},
        {"name": "seq", "type": "long",
         "doc": "Position in the transaction (1-based); for a snapshot read, the row's ordinal "
                "in its table minus 2^31 (negative: it sorts before every change at its lsn). "
                "(schema, table, lsn, seq) identifies the event."},
        {"name": "xid", "type": ["null", "long"], "default": None},
        {"name": "commit_ts", "type": {"type": "long", "logicalType": "timestamp-micros"},
         "doc": "Source commit time (snapshot: when the snapshot was taken), UTC."},
        {"name": "snapshot", "type": "boolean"},
        {"name": "columns", "type": {"type": "array", "items": {
            "type": "record", "name": "Column", "fields": [
                {"name": "name", "type": "string"},
                {"name": "type", "type": "string",
                 "doc": "format_type() of the column, e.g. numeric(10,2); enums by their name."},
                {"name": "key", "type": "boolean", "doc": "Part of the primary/replica key."},
            ]}}},
        {"name": "before", "type": ["null", _VALUES], "default": None,
         "doc": "Old image: key columns, or all columns under REPLICA IDENTITY FULL."},
        {"name": "after", "type": ["null", _VALUES], "default": None},
        {"name": "unchanged", "type": {"type": "array", "items": "string"}, "default": [],
         "doc": "Columns of `after` left out because their TOASTed value did not change."},
    ],
}

PARSED_SCHEMA = fastavro.parse_schema(AVRO_SCHEMA)
SCHEMA_FINGERPRINT = bytes.fromhex(
    fingerprint(to_parsing_canonical_form(PARSED_SCHEMA), "CRC-64-AVRO"))
_MARKER = b"\xc3\x01"
_HEADER = _MARKER + SCHEMA_FINGERPRINT[::-1]  # the spec stores the fingerprint little-endian


class ContractError(TerminalError, ValueError):
    """Bytes or values that do not follow the contract (terminal: retrying cannot fix them)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    key: bool = False


@dataclass(frozen=True)
class ChangeEvent:
    op: str
    schema: str
    table: str
    lsn: int
    seq: int
    commit_ts: dt.datetime
    columns: tuple[Column, ...]
    before: Mapping[str, str | None] | None = None
    after: Mapping[str, str | None] | None = None
    xid: int | None = None
    snapshot: bool = False
    unchanged: tuple[str, ...] = field(default_factory=tuple)
    version: int = CONTRACT_VERSION

    @property
    def identity(self) -> tuple[str, str, int, int]:
        """What makes the event unique: (schema, table, lsn, seq). Every sink is idempotent on it."""
        return (self.schema, self.table, self.lsn, self.seq)

    @property
    def key_values(self) -> tuple[str | None, ...]:
        """The primary-key values, from the new image or else the old one."""
        image = self.after if self.after is not None else (self.before or {})
        return tuple(image.get(c.name) for c in self.columns if c.key)

    @property
    def partition_key(self) -> str:
        """Kinesis partition key: table plus primary key, so every version of a row shares a shard."""
        return partition_key(self.schema, self.table, self.key_values)


def snapshot_seq(ordinal: int) -> int:
    """The seq of the snapshot read of a table's ``ordinal``-th row (1-based): see SEQ_RANGE."""
    if not 1 <= ordinal < SEQ_RANGE:
        raise ContractError(f"snapshot row ordinal {ordinal} is outside 1 .. 2^31 - 1")
    return ordinal - SEQ_RANGE


def partition_key(schema: str, table: str, key_values: Sequence[str | None]) -> str:
    """``schema.table/k1/k2``; a truncate (no key) keys on the table alone. At most 256 chars."""
    text = "/".join([f"{schema}.{table}", *("" if v is None else v for v in key_values)])
    return text[:256]


@lru_cache(maxsize=4096)
def _columns(shape: tuple[tuple[str, str, bool], ...]) -> tuple[Column, ...]:
    """The Column objects of a column shape, made once per shape: every event of a table carries
    the same shape, and building the objects is a large part of decoding an event."""
    return tuple(Column(name, type_, key) for name, type_, key in shape)


def from_record(record: Mapping[str, Any]) -> ChangeEvent:
    """An event from a decoded Avro record (as fastavro returns it)."""
    commit_ts = record["commit_ts"]
    if commit_ts.tzinfo is None:
        commit_ts = commit_ts.replace(tzinfo=dt.UTC)
    return ChangeEvent(
        version=record["version"],
        op=record["op"],
        schema=record["schema"],
        table=record["table"],
        lsn=record["lsn"],
        seq=record["seq"],
        xid=record["xid"],
        commit_ts=commit_ts,
        snapshot=record["snapshot"],
        columns=_columns(tuple((c["name"], c["type"], c["key"]) for c in record["columns"])),
        before=record["before"],
        after=record["after"],
        unchanged=tuple(record["unchanged"]),
    )


def encode(event: ChangeEvent) -> bytes:
    """Avro single-object encoding of one event.

    Written by hand for this one schema, field by field, because encoding is on capture's hot path
    (fastavro's generic writer cost more than everything else capture does per event). The bytes
    are exactly what ``fastavro.schemaless_writer`` writes for the same record (a property test
    holds the two together); decoding stays on fastavro.
    """
    try:
        head = _HEADS.get((event.version, event.op, event.schema, event.table)) or _head(event)
        lsn, xid, commit_ts, snapshot, lsn_bytes, rest = _last_transaction[0]
        if not (event.lsn is lsn and event.xid is xid and event.commit_ts is commit_ts
                and event.snapshot is snapshot):
            lsn_bytes, rest = _transaction(event)
        return b"".join((
            head, lsn_bytes, avro_long(event.seq), rest,
            _column_array(event.columns), _NULL if event.before is None else _image(event.before),
            _image(event.after), _string_array(event.unchanged)))
    except (KeyError, AttributeError, TypeError, OverflowError) as exc:
        raise ContractError(f"event {event.schema}.{event.table} at LSN {event.lsn:X} seq {event.seq} "
                            f"does not fit the contract: {exc!r}") from exc


# --- the hand-written Avro encoder behind encode() ---

_NULL = b"\x00"  # union branch 0 ("null"); also the end of an array or map (a block of 0 items)
_BRANCH_1 = b"\x02"  # union branch 1 (the non-null type)
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# Varint pieces by table lookup, 14 bits at a time: several times faster than a bit loop.
_TAIL = tuple(bytes((z,)) if z < 0x80 else bytes((z & 0x7F | 0x80, z >> 7)) for z in range(1 << 14))
_CHUNK = tuple(bytes((z & 0x7F | 0x80, z >> 7 | 0x80)) for z in range(1 << 14))
_OP_INDEX = {op: _TAIL[i << 1] for i, op in enumerate(OPS)}


# The fields before lsn, by (version, op, schema, table): the same few for every event.
_HEADS: dict[tuple[int, str, str, str], bytes] = {}


def _head(event: ChangeEvent) -> bytes:
    data = b"".join((_HEADER, avro_long(event.version), _OP_INDEX[event.op], _string(event.schema),
                     _string(event.table)))
    if len(_HEADS) >= 4096:
        _HEADS.clear()
    _HEADS[(event.version, event.op, event.schema, event.table)] = data
    return data


# The last event's lsn, xid, commit_ts and snapshot, then its lsn and the fields after seq, encoded:
# the events of a transaction come in a row and share these very objects (identity is the check,
# so a value that merely compares equal is encoded afresh). One tuple, replaced whole: threads
# never see the values of one event with the bytes of another.
_last_transaction: list[tuple[object, object, object, object, bytes, bytes]] = [
    (None, None, None, None, b"", b"")]


def _transaction(event: ChangeEvent) -> tuple[bytes, bytes]:
    lsn_bytes = avro_long(event.lsn)
    rest = b"".join((_NULL if event.xid is None else _BRANCH_1 + avro_long(event.xid),
                     avro_long(_micros(event.commit_ts)), b"\x01" if event.snapshot else b"\x00"))
    _last_transaction[0] = (event.lsn, event.xid, event.commit_ts, event.snapshot, lsn_bytes, rest)
    return lsn_bytes, rest


def _varint(zigzag: int) -> bytes:
    """Little-endian base-128 of a non-negative int."""
    # Unrolled up to 56 bits: LSNs, xids and commit times (about 2^52 zig-zagged) all fit.
    if zigzag < 1 << 14:
        return _TAIL[zigzag]
    if zigzag < 1 << 28:
        return _CHUNK[zigzag & 0x3FFF] + _TAIL[zigzag >> 14]
    if zigzag < 1 << 42:
        return b"".join((_CHUNK[zigzag & 0x3FFF], _CHUNK[zigzag >> 14 & 0x3FFF], _TAIL[zigzag >> 28]))
    if zigzag < 1 << 56:
        return b"".join((_CHUNK[zigzag & 0x3FFF], _CHUNK[zigzag >> 14 & 0x3FFF],
                         _CHUNK[zigzag >> 28 & 0x3FFF], _TAIL[zigzag >> 42]))
    out = b""
    while zigzag >= 1 << 14:
        out += _CHUNK[zigzag & 0x3FFF]
        zigzag >>= 14
    return out + _TAIL[zigzag]


def avro_long(value: int) -> bytes:
    """An Avro int/long: zig-zag, then varint."""
    if 0 <= value < 1 << 13:
        return _TAIL[value << 1]
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise OverflowError(f"{value} is outside Avro's long range")
    return _varint((value << 1) ^ (value >> 63))


def _string(text: str) -> bytes:
    data = text.encode()
    size = len(data)
    return (_TAIL[size << 1] if size < 1 << 13 else avro_long(size)) + data


def _micros(ts: dt.datetime) -> int:
    """timestamp-micros as fastavro computes it for an aware datetime."""
    if ts.tzinfo is None:
        raise TypeError("commit_ts must be timezone-aware (UTC)")
    delta = ts - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _image(image: Mapping[str, str | None] | None) -> bytes:
    """A ["null", map<["null", string]>] union: one block holding every entry, then the end."""
    if image is None:
        return _NULL
    parts = [_BRANCH_1, avro_long(len(image))] if image else [_BRANCH_1]
    append = parts.append
    for name, value in image.items():
        key = _NAMES.get(name) or _name(name)
        if value is None:
            append(key[1])
        else:
            data = value.encode()
            size = len(data)
            append(key[0] + (_TAIL[size << 1] if size < 1 << 13 else avro_long(size)) + data)
    append(_NULL)
    return b"".join(parts)


# An image entry's column name encoded, followed by the value's union branch: (string, null).
_NAMES: dict[str, tuple[bytes, bytes]] = {}


def _name(name: str) -> tuple[bytes, bytes]:
    if len(_NAMES) >= 4096:
        _NAMES.clear()
    key = _string(name)
    entry = _NAMES[name] = (key + _BRANCH_1, key + _NULL)
    return entry


def _string_array(items: Sequence[str]) -> bytes:
    if not items:
        return _NULL
    return b"".join((avro_long(len(items)), *map(_string, items), _NULL))


# Encoded column arrays, by the identity of the columns tuple: every event of a table version
# carries the same tuple (EventBuilder and decode share one per shape), and hashing a tuple of
# dataclasses costs more than the lookup saves. The entry keeps the tuple alive, so its id
# cannot be reused while the entry exists.
_COLUMN_ARRAYS: dict[int, tuple[tuple[Column, ...], bytes]] = {}


def _column_array(columns: tuple[Column, ...]) -> bytes:
    entry = _COLUMN_ARRAYS.get(id(columns))
    if entry is not None and entry[0] is columns:
        return entry[1]
    data = b"".join((avro_long(len(columns)), *(
        _string(c.name) + _string(c.type) + (b"\x01" if c.key else b"\x00") for c in columns),
        _NULL)) if columns else _NULL
    if len(_COLUMN_ARRAYS) >= 4096:
        _COLUMN_ARRAYS.clear()
    _COLUMN_ARRAYS[id(columns)] = (columns, data)
    return data


def decode(data: bytes) -> ChangeEvent:
    """The event in ``data``; ContractError naming what is wrong when it is not one."""
    return from_record(decode_record(data))


def decode_record(data: bytes) -> dict[str, Any]:
    """The Avro record in ``data``, as fastavro returns it (what an Avro container file holds)."""
    if data[:2] != _MARKER:
        raise ContractError("not an Avro single-object encoded change event (bad marker)")
    if data[2:10] != _HEADER[2:]:
        raise ContractError(
            f"change event written with an unknown schema (fingerprint {data[2:10][::-1].hex()}, "
            f"this reader knows {SCHEMA_FINGERPRINT.hex()})")
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), PARSED_SCHEMA, None)
    except Exception as exc:  # fastavro raises many types for truncated or corrupt input
        raise ContractError(f"corrupt change event body: {exc!r}") from exc
    if not isinstance(record, dict):
        raise ContractError("corrupt change event body")
    return record


# --- Parquet: the processed zone's typed columns -------------------------------------------------

# Metadata columns every processed Parquet file carries, ahead of the table's own columns.
META_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("_op", pa.string()),
    ("_lsn", pa.int64()),
    ("_seq", pa.int64()),
    ("_xid", pa.int64()),
    ("_commit_ts", pa.timestamp("us", tz="UTC")),
    ("_snapshot", pa.bool_()),
    ("_unchanged", pa.list_(pa.string())),
)

_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_TIMESTAMP = re.compile(r"timestamp(\(\d\))? without time zone")
_TIMESTAMPTZ = re.compile(r"timestamp(\(\d\))? with time zone")


def _parse_bool(text: str) -> bool:
    if text in ("t", "true"):
        return True
    if text in ("f", "false"):
        return False
    raise ContractError(f"not a boolean: {text!r}")


def _parse_timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _parse_timestamptz(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value.astimezone(dt.UTC)


def arrow_type(pg_type: str) -> tuple[pa.DataType, Callable[[str], Any]]:
    """The Arrow type for a PostgreSQL type name, and the parser from its text form.

    Unknown types (enums, json, uuid, ...) are kept as text: nothing is ever dropped for its type.
    """
    simple: dict[str, tuple[pa.DataType, Callable[[str], Any]]] = {
        "smallint": (pa.int16(), int),
        "integer": (pa.int32(), int),
        "bigint": (pa.int64(), int),
        "boolean": (pa.bool_(), _parse_bool),
        "real": (pa.float32(), float),
        "double precision": (pa.float64(), float),
        "date": (pa.date32(), dt.date.fromisoformat),
    }
    if pg_type in simple:
        return simple[pg_type]
    if m := _NUMERIC.fullmatch(pg_type):
        return pa.decimal128(int(m[1]), int(m[2])), decimal.Decimal
    if _TIMESTAMP.fullmatch(pg_type):
        return pa.timestamp("us"), _parse_timestamp
    if _TIMESTAMPTZ.fullmatch(pg_type):
        return pa.timestamp("us", tz="UTC"), _parse_timestamptz
    return pa.string(), str


def parquet_schema(columns: Sequence[Column]) -> pa.Schema:
    """Arrow schema of a processed file: the metadata columns, then the table's typed columns."""
    fields = [pa.field(name, typ) for name, typ in META_COLUMNS]
    for col in columns:
        fields.append(pa.field(col.name, arrow_type(col.type)[0],
                               metadata={"pg_type": col.type, "key": str(col.key).lower()}))
    return pa.schema(fields)

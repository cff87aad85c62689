"""pgoutput decoder: one logical replication message (bytes) in, one typed message out. No I/O.

Protocol versions 1 and 2 (PostgreSQL's "Logical Replication Message Formats"). In version 2 a
large transaction may be streamed while in progress: between Stream Start and Stream Stop, the
Relation, Type, Insert, Update, Delete, Truncate and Message messages carry the transaction's xid
right after their type byte. The caller knows whether it is inside a stream and says so with
``in_stream``; the decoder itself keeps no state.

Tuple values: ``None`` for SQL NULL, :data:`UNCHANGED` for an unchanged TOASTed value (not sent),
``str`` for a text-format value, ``bytes`` for a binary-format one.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from capture.errors import DecodeError

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

# Relation column flag: the column is part of the replica identity (the key).
KEY_FLAG = 1
TRANSACTIONAL_FLAG = 1


class _Unchanged:
    """The marker for an unchanged TOASTed value (pgoutput sends 'u' instead of the value)."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
Value = str | bytes | _Unchanged | None


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_ts: dt.datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: dt.datetime


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def key(self) -> bool:
        return bool(self.flags & KEY_FLAG)


@dataclass(frozen=True, slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[RelationColumn, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Type:
    type_oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    relation_id: int
    new: tuple[Value, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    relation_id: int
    new: tuple[Value, ...]
    old: tuple[Value, ...] | None = None
    old_kind: str | None = None  # 'K' key columns only, 'O' the whole old row, None not sent
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation_id: int
    old: tuple[Value, ...]
    old_kind: str  # 'K' or 'O'
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    options: int
    relation_ids: tuple[int, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Message:
    flags: int
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None

    @property
    def transactional(self) -> bool:
        return bool(self.flags & TRANSACTIONAL_FLAG)


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: dt.datetime


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int


PgOutputMessage = (Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate
                   | Message | StreamStart | StreamStop | StreamCommit | StreamAbort)

_U8 = struct.Struct(">B")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_STREAM_COMMIT = struct.Struct(">IBQQq")
_STREAM_START = struct.Struct(">IB")
_STREAM_ABORT = struct.Struct(">II")
_MESSAGE_HEAD = struct.Struct(">BQ")
_COLUMN_TYPE = struct.Struct(">Ii")
_TRUNCATE_HEAD = struct.Struct(">IB")
_MICROS = dt.timedelta(microseconds=1)


_last_timestamp = [(0, PG_EPOCH)]  # one (micros, datetime) pair, replaced whole


def _timestamp(micros: int) -> dt.datetime:
    # A transaction's Begin and Commit carry the same time: the second reuses the first's datetime.
    last = _last_timestamp[0]
    if last[0] == micros:
        return last[1]
    value = PG_EPOCH + micros * _MICROS
    _last_timestamp[0] = (micros, value)
    return value


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode(), end + 1


def _tuple(data: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    (count,) = _I16.unpack_from(data, pos)
    if count < 0:
        raise DecodeError(f"negative column count {count} at offset {pos}")
    pos += 2
    values: list[Value] = []
    append = values.append
    size = len(data)
    unpack = _I32.unpack_from
    for _ in range(count):
        kind = data[pos]
        if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary  # noqa: PLR1714
            (length,) = unpack(data, pos + 1)
            pos += 5
            end = pos + length
            if length < 0 or end > size:
                raise DecodeError(f"value of {length} bytes overruns the message at offset {pos}")
            append(data[pos:end].decode() if kind == 0x74 else data[pos:end])
            pos = end
        elif kind == 0x6E:  # 'n'
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u'
            append(UNCHANGED)
            pos += 1
        else:
            raise DecodeError(f"unknown tuple value kind {kind:#04x} at offset {pos}")
    return tuple(values), pos


def _xid(data: bytes, pos: int, in_stream: bool) -> tuple[int | None, int]:
    if not in_stream:
        return None, pos
    return _U32.unpack_from(data, pos)[0], pos + 4


def _decode(data: bytes, in_stream: bool) -> tuple[PgOutputMessage, int]:
    kind = data[0]
    # Inserts first: one per row; then Begin and Commit, one per transaction.
    if kind == 0x49:  # 'I'
        xid, pos = _xid(data, 1, in_stream) if in_stream else (None, 1)
        (relid,) = _U32.unpack_from(data, pos)
        if data[pos + 4] != 0x4E:  # 'N'
            raise DecodeError(f"insert without a new tuple (byte {data[pos + 4]:#04x})")
        new, pos = _tuple(data, pos + 5)
        return Insert(relid, new, xid), pos
    if kind == 0x42:  # 'B'
        lsn, ts, xid = _BEGIN.unpack_from(data, 1)
        return Begin(lsn, _timestamp(ts), xid), 1 + _BEGIN.size
    if kind == 0x43:  # 'C'
        flags, lsn, end, ts = _COMMIT.unpack_from(data, 1)
        return Commit(flags, lsn, end, _timestamp(ts)), 1 + _COMMIT.size
    if kind == 0x55:  # 'U'
        xid, pos = _xid(data, 1, in_stream)
        (relid,) = _U32.unpack_from(data, pos)
        pos += 4
        old: tuple[Value, ...] | None = None
        old_kind = None
        if data[pos] in (0x4B, 0x4F):  # 'K', 'O'
            old_kind = chr(data[pos])
            old, pos = _tuple(data, pos + 1)
        if data[pos] != 0x4E:
            raise DecodeError(f"update without a new tuple (byte {data[pos]:#04x})")
        new, pos = _tuple(data, pos + 1)
        return Update(relid, new, old, old_kind, xid), pos
    if kind == 0x44:  # 'D'
        xid, pos = _xid(data, 1, in_stream)
        (relid,) = _U32.unpack_from(data, pos)
        if data[pos + 4] not in (0x4B, 0x4F):
            raise DecodeError(f"delete without an old tuple (byte {data[pos + 4]:#04x})")
        old_kind = chr(data[pos + 4])
        old, pos = _tuple(data, pos + 5)
        return Delete(relid, old, old_kind, xid), pos
    if kind == 0x52:  # 'R'
        xid, pos = _xid(data, 1, in_stream)
        (relid,) = _U32.unpack_from(data, pos)
        namespace, pos = _string(data, pos + 4)
        name, pos = _string(data, pos)
        identity = chr(data[pos])
        (count,) = _I16.unpack_from(data, pos + 1)
        pos += 3
        columns = []
        for _ in range(max(count, 0)):
            flags = data[pos]
            col_name, pos = _string(data, pos + 1)
            oid, typmod = _COLUMN_TYPE.unpack_from(data, pos)
            pos += _COLUMN_TYPE.size
            columns.append(RelationColumn(flags, col_name, oid, typmod))
        return Relation(relid, namespace, name, identity, tuple(columns), xid), pos
    if kind == 0x59:  # 'Y'
        xid, pos = _xid(data, 1, in_stream)
        (oid,) = _U32.unpack_from(data, pos)
        namespace, pos = _string(data, pos + 4)
        name, pos = _string(data, pos)
        return Type(oid, namespace, name, xid), pos
    if kind == 0x54:  # 'T'
        xid, pos = _xid(data, 1, in_stream)
        count, options = _TRUNCATE_HEAD.unpack_from(data, pos)
        pos += _TRUNCATE_HEAD.size
        relids = struct.unpack_from(f">{count}I", data, pos)
        return Truncate(options, relids, xid), pos + 4 * count
    if kind == 0x4D:  # 'M'
        xid, pos = _xid(data, 1, in_stream)
        flags, lsn = _MESSAGE_HEAD.unpack_from(data, pos)
        prefix, pos = _string(data, pos + _MESSAGE_HEAD.size)
        (length,) = _I32.unpack_from(data, pos)
        pos += 4
        if length < 0 or pos + length > len(data):
            raise DecodeError(f"message content of {length} bytes overruns the message")
        return Message(flags, lsn, prefix, data[pos:pos + length], xid), pos + length
    if kind == 0x4F:  # 'O'
        (lsn,) = struct.unpack_from(">Q", data, 1)
        name, pos = _string(data, 9)
        return Origin(lsn, name), pos
    if kind == 0x53:  # 'S'
        xid, first = _STREAM_START.unpack_from(data, 1)
        return StreamStart(xid, first == 1), 1 + _STREAM_START.size
    if kind == 0x45:  # 'E'
        return StreamStop(), 1
    if kind == 0x63:  # 'c'
        xid, flags, lsn, end, ts = _STREAM_COMMIT.unpack_from(data, 1)
        return StreamCommit(xid, flags, lsn, end, _timestamp(ts)), 1 + _STREAM_COMMIT.size
    if kind == 0x41:  # 'A'
        xid, subxid = _STREAM_ABORT.unpack_from(data, 1)
        return StreamAbort(xid, subxid), 1 + _STREAM_ABORT.size
    raise DecodeError(f"unknown pgoutput message type {kind:#04x}")


def decode(data: bytes, in_stream: bool = False) -> PgOutputMessage:
    """The message in ``data``; DecodeError (naming the message type) when the bytes are not one."""
    if not data:
        raise DecodeError("empty pgoutput message")
    try:
        message, end = _decode(data, in_stream)
    except DecodeError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        # ValueError covers bad UTF-8 and a missing string terminator.
        raise DecodeError(f"malformed pgoutput message of type {data[:1]!r}: {exc}") from None
    if end != len(data):
        raise DecodeError(f"pgoutput message of type {data[:1]!r} has {len(data) - end} trailing bytes")
    return message

"""The Kinesis Producer Library aggregation format: many user records in one Kinesis record.

Layout (as the KPL and the AWS deaggregation libraries define it): the magic bytes ``F3 89 9A C2``,
a protobuf ``AggregatedRecord``, then the MD5 of that protobuf::

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }
    message Tag {
      required string key                     = 1;
      optional string value                   = 2;
    }

The protobuf subset is small enough to write here rather than carry a code generator.
A Kinesis record without the magic (or whose digest does not match) is one plain user record,
as the AWS deaggregators treat it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_SIZE = 16
# The tag on an aggregate's first record saying when capture read the aggregate's last event
# (epoch seconds, as text): the latency waterfall's "capture read" (totes_cdc.stages). Consumers
# that do not know it ignore it, as the AWS deaggregators ignore every tag.
CAPTURE_READ_TAG = b"capture_read"
# Wire overhead of an aggregated record beyond its payloads and partition keys (the capture read
# tag bounded: its framing, key and a float's repr); used by producers to stay under Kinesis'
# 1 MiB record limit.
FIXED_OVERHEAD = len(MAGIC) + _DIGEST_SIZE + 8 + len(CAPTURE_READ_TAG) + 24


class AggregationError(ValueError):
    """An aggregated record whose protobuf body is malformed."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints of the lengths and indexes most records have, looked up instead of computed.
_VARINTS = tuple(_varint(n) for n in range(1 << 14))
# Protobuf tags (field number << 3 | wire type): AggregatedRecord.records (3, length-delimited),
# Record.partition_key_index (1, varint), Record.data (3, length-delimited).
_RECORD_TAG, _INDEX_TAG, _DATA_TAG = b"\x1a", b"\x08", b"\x1a"


def _size(value: int) -> bytes:
    return _VARINTS[value] if value < 1 << 14 else _varint(value)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _size(len(payload)) + payload


def record_size(partition_key: str, data: bytes) -> int:
    """Bytes one user record adds to an aggregate (its key counted as if new to the key table)."""
    key = partition_key.encode()
    inner = 2 + len(_varint(len(data))) + len(data) + 2
    return len(_field(1, key)) + len(_field(3, b"\0" * inner))


def aggregate(records: Sequence[tuple[str, bytes]], read_at: float | None = None) -> bytes:
    """One aggregated Kinesis record holding ``(partition_key, data)`` user records, in order;
    ``read_at``: when capture read the last of them, tagged on the first (:data:`CAPTURE_READ_TAG`)."""
    # On capture's hot path: tags and small varints come from tables, and the pieces are joined
    # once, so each record's data is copied once.
    keys: dict[str, int] = {}
    parts: list[bytes] = []
    extend = parts.extend
    for key, data in records:
        index = keys.get(key)
        if index is None:
            index = keys[key] = len(keys)
        index_bytes = _size(index)
        data_size = _size(len(data))
        extend((_RECORD_TAG, _size(2 + len(index_bytes) + len(data_size) + len(data)),
                _INDEX_TAG, index_bytes, _DATA_TAG, data_size, data))
    if read_at is not None and parts:
        tag = _field(4, _field(1, CAPTURE_READ_TAG) + _field(2, repr(read_at).encode()))
        parts[1] = _size(2 + len(parts[3]) + len(parts[5]) + len(parts[6]) + len(tag))
        parts.insert(7, tag)
    table = [_field(1, key.encode()) for key in keys]
    proto = b"".join((*table, *parts))
    return MAGIC + proto + hashlib.md5(proto, usedforsecurity=False).digest()


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise AggregationError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise AggregationError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise AggregationError("truncated field")
            yield number, buf[pos:pos + length]
            pos += length
        else:
            raise AggregationError(f"unexpected protobuf wire type {wire}")


def is_aggregated(data: bytes) -> bool:
    return (len(data) > len(MAGIC) + _DIGEST_SIZE and data.startswith(MAGIC)
            and hashlib.md5(data[len(MAGIC):-_DIGEST_SIZE], usedforsecurity=False).digest()
            == data[-_DIGEST_SIZE:])


def deaggregate(data: bytes, partition_key: str = "") -> list[tuple[str, bytes]]:
    """The ``(partition_key, data)`` user records inside one Kinesis record, in order."""
    if not is_aggregated(data):
        return [(partition_key, data)]
    keys: list[str] = []
    records: list[tuple[int, bytes]] = []
    for number, value in _fields(data[len(MAGIC):-_DIGEST_SIZE]):
        if number == 1 and isinstance(value, bytes):
            keys.append(value.decode())
        elif number == 3 and isinstance(value, bytes):
            index, payload = 0, b""
            for inner_number, inner_value in _fields(value):
                if inner_number == 1 and isinstance(inner_value, int):
                    index = inner_value
                elif inner_number == 3 and isinstance(inner_value, bytes):
                    payload = inner_value
            records.append((index, payload))
    try:
        return [(keys[index], payload) for index, payload in records]
    except IndexError:
        raise AggregationError("partition key index out of range") from None


def capture_read(data: bytes) -> float | None:
    """When capture read the last event of this Kinesis record (:func:`aggregate`'s ``read_at``);
    None for a plain record or an aggregate without the tag."""
    if not is_aggregated(data):
        return None
    for number, value in _fields(data[len(MAGIC):-_DIGEST_SIZE]):
        if number == 3 and isinstance(value, bytes):  # the first record holds the tag
            for inner_number, tag in _fields(value):
                if inner_number == 4 and isinstance(tag, bytes):
                    fields = dict(_fields(tag))
                    text = fields.get(2)
                    if fields.get(1) == CAPTURE_READ_TAG and isinstance(text, bytes):
                        return float(text)
            return None
    return None


def payloads(data: bytes) -> list[bytes]:
    """The data of the user records in one Kinesis record, in order: what :func:`deaggregate`
    returns, without the partition keys, for a record laid out as :func:`aggregate` writes it
    (the key table, then each record as key index, data and tags). Several times faster (the stream
    processor's hot path); AggregationError for any other layout, which deaggregate still reads."""
    if not is_aggregated(data):
        return [data]
    out: list[bytes] = []
    keys = 0
    pos, end = len(MAGIC), len(data) - _DIGEST_SIZE
    while pos < end and data[pos] == 0x0A:  # partition_key_table, checked as deaggregate does
        size, pos = _read_varint(data, pos + 1)
        data[pos:pos + size].decode()
        pos += size
        keys += 1
    while pos < end:
        if data[pos] != 0x1A:
            raise AggregationError("not the layout aggregate() writes")
        size, pos = _read_varint(data, pos + 1)
        record_end = pos + size
        if record_end > end or data[pos] != 0x08:
            raise AggregationError("not the layout aggregate() writes")
        index, pos = _read_varint(data, pos + 1)
        if index >= keys or data[pos] != 0x1A:
            raise AggregationError("not the layout aggregate() writes")
        size, pos = _read_varint(data, pos + 1)
        if pos + size > record_end or (pos + size < record_end and data[pos + size] != 0x22):
            raise AggregationError("not the layout aggregate() writes")  # only tags after the data
        out.append(data[pos:pos + size])
        pos = record_end
    if pos != end:
        raise AggregationError("truncated field")
    return out

"""kpl: aggregation round-trips, and writes exactly what the straightforward encoding writes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from totes_cdc import kpl

KEYS = st.text(max_size=20) | st.sampled_from(["public.sales_order/1", "public.sales_order/2", "é/ü"])
RECORDS = st.lists(st.tuples(KEYS, st.binary(max_size=300) | st.sampled_from([b"", b"x" * 20_000])),
                   max_size=60)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def reference_aggregate(records: Sequence[tuple[str, bytes]]) -> bytes:
    """Field by field, as the protobuf definition in kpl's docstring reads."""
    keys: dict[str, int] = {}
    body = b""
    for key, data in records:
        index = keys.setdefault(key, len(keys))
        body += _field(3, b"\x08" + _varint(index) + _field(3, data))
    proto = b"".join(_field(1, k.encode()) for k in keys) + body
    return kpl.MAGIC + proto + hashlib.md5(proto, usedforsecurity=False).digest()


@settings(max_examples=300, deadline=None)
@given(RECORDS)
def test_aggregate_writes_the_reference_encoding(records: list[tuple[str, bytes]]) -> None:
    assert kpl.aggregate(records) == reference_aggregate(records)


@settings(max_examples=300, deadline=None)
@given(RECORDS)
def test_aggregate_then_deaggregate_gives_the_records_back_in_order(records: list[tuple[str, bytes]]) -> None:
    data = kpl.aggregate(records)
    assert kpl.is_aggregated(data) == bool(len(data) > len(kpl.MAGIC) + 16)
    if kpl.is_aggregated(data):
        assert kpl.deaggregate(data) == records


def test_many_distinct_keys_and_large_records_use_multi_byte_varints() -> None:
    records = [(f"k{i}", bytes([i % 256])) for i in range(20_000)] + [("big", b"y" * 70_000)]
    data = kpl.aggregate(records)
    assert data == reference_aggregate(records)
    assert kpl.deaggregate(data) == records


def test_a_plain_record_is_one_user_record() -> None:
    assert kpl.deaggregate(b"plain", "pk") == [("pk", b"plain")]


def test_record_size_bounds_what_a_record_adds() -> None:
    base = kpl.aggregate([("a", b"x")])
    grown = kpl.aggregate([("a", b"x"), ("public.payment/7", b"z" * 500)])
    added = len(grown) - len(base)
    assert added <= kpl.record_size("public.payment/7", b"z" * 500) <= added + 2


@pytest.mark.parametrize(("body", "problem"), [
    (b"\x0a\x05ab", "truncated field"),
    (b"\x0a" + b"\xff" * 11, "varint too long"),
    (b"\x0a", "truncated varint"),
    (b"\x0d\x00\x00\x00\x00", "unexpected protobuf wire type 5"),
    (b"\x1a\x02\x08\x03", "partition key index out of range"),
])
def test_a_malformed_aggregate_is_an_aggregation_error(body: bytes, problem: str) -> None:
    data = kpl.MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()
    with pytest.raises(kpl.AggregationError, match=problem):
        kpl.deaggregate(data)

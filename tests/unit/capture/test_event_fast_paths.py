"""Capture's per-row shortcuts give what the general code gives.

The hot path skips work where it can (a one-column key's partition key from a prefix, an image of
text values built in one pass, the encoding of a transaction's shared fields reused, varints
unrolled); each is held here against the plain definition, on generated input.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from capture.decoder import UNCHANGED, Begin, Delete, Insert, Relation, RelationColumn, Update
from capture.events import EventBuilder
from tests.unit.test_contract_encoding import EVENTS, LONGS, fastavro_encoding
from totes_cdc import contract

TS = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
VALUES = st.one_of(st.none(), st.text(max_size=300))


class Catalog:
    def __init__(self, primary_key: tuple[str, ...]) -> None:
        self.primary_key = primary_key

    def describe(self, relation: Relation) -> tuple[list[str], list[str] | None]:
        return ["text"] * len(relation.columns), list(self.primary_key)


def _builder(primary_key: tuple[str, ...]) -> EventBuilder:
    b = EventBuilder(Catalog(primary_key))
    b.relation(Relation(7, "sales", "order", "d", (
        RelationColumn(1, "id", 25, -1), RelationColumn(0, "name", 25, -1),
        RelationColumn(0, "note", 25, -1))))
    b.begin(Begin(0x16B3748, TS, 9))
    return b


@settings(max_examples=300, deadline=None)
@given(st.tuples(VALUES, VALUES, VALUES), st.sampled_from([("id",), ("id", "name")]))
def test_partition_keys_and_images_are_the_contracts(row: tuple[str | None, ...],
                                                     primary_key: tuple[str, ...]) -> None:
    b = _builder(primary_key)
    for message in (Insert(7, row), Update(7, row), Delete(7, row, "O")):
        [(event, key)] = b.change(message)
        image = event.after if event.after is not None else event.before
        assert image == dict(zip(("id", "name", "note"), row, strict=True))
        assert key == event.partition_key == contract.partition_key(
            "sales", "order", [image[n] for n in primary_key])


def test_an_unchanged_toast_value_still_takes_the_general_path() -> None:
    [(event, _)] = _builder(("id",)).change(Update(7, ("1", "a", UNCHANGED)))
    assert event.after == {"id": "1", "name": "a"} and event.unchanged == ("note",)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, min_size=1, max_size=6), st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_events_of_one_transaction_encode_as_fastavro_writes_them(events: list[contract.ChangeEvent],
                                                                  picks: list[int]) -> None:
    """Events in a row sharing their transaction's objects (as the builder's do), and events whose
    values only compare equal to the last one's: every encoding is fastavro's."""
    first = events[0]
    shared = [dataclasses.replace(e, lsn=first.lsn, xid=first.xid, commit_ts=first.commit_ts,
                                  snapshot=first.snapshot) for e in events]
    equal = dataclasses.replace(events[-1], lsn=int(str(first.lsn)), commit_ts=first.commit_ts.replace())
    for event in [*(shared[i % len(shared)] for i in picks), equal, *events]:
        assert contract.encode(event) == fastavro_encoding(event)


@settings(max_examples=500, deadline=None)
@given(LONGS)
def test_unrolled_varints_are_base_128(value: int) -> None:
    zigzag = (value << 1) ^ (value >> 63)
    expected = bytearray()
    while zigzag > 0x7F:
        expected.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    expected.append(zigzag)
    assert contract.avro_long(value) == bytes(expected)


def test_varints_at_every_unrolled_boundary() -> None:
    for bits in (13, 14, 27, 28, 41, 42, 55, 56, 62):
        for value in (1 << bits) - 1, 1 << bits, -(1 << bits), random.getrandbits(bits):
            test_unrolled_varints_are_base_128.hypothesis.inner_test(value)  # type: ignore[attr-defined]

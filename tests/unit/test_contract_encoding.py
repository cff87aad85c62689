"""contract.encode: the hand-written encoder writes exactly what fastavro writes, and decodes back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from totes_cdc import contract
from totes_cdc.contract import ChangeEvent, Column, ContractError

LONGS = st.one_of(st.integers(-(2**63), 2**63 - 1),
                  st.sampled_from([0, 1, -1, 63, 64, -64, -65, 4095, 4096, 8191, 8192, 2**31, 2**63 - 1,
                                   -(2**63)]))
TEXT = st.text(max_size=40)
IMAGE = st.one_of(st.none(), st.dictionaries(TEXT, st.one_of(st.none(), st.text(max_size=300)), max_size=12))
COLUMNS = st.lists(st.builds(Column, TEXT, st.sampled_from(["bigint", "text", "numeric(10,2)", "é"]),
                             st.booleans()), max_size=12).map(tuple)
TIMESTAMPS = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                          timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30)),
                                                     dt.timezone(dt.timedelta(hours=14))]))
EVENTS = st.builds(ChangeEvent, op=st.sampled_from(contract.OPS), schema=TEXT, table=TEXT, lsn=LONGS,
                   seq=LONGS, commit_ts=TIMESTAMPS, columns=COLUMNS, before=IMAGE, after=IMAGE,
                   xid=st.one_of(st.none(), LONGS), snapshot=st.booleans(),
                   unchanged=st.lists(TEXT, max_size=5).map(tuple), version=LONGS.filter(
                       lambda v: -(2**31) <= v < 2**31))


def fastavro_encoding(event: ChangeEvent) -> bytes:
    """The reference: the record fastavro's generic writer encodes, behind the same header."""
    record: dict[str, Any] = {
        "version": event.version, "op": event.op, "schema": event.schema, "table": event.table,
        "lsn": event.lsn, "seq": event.seq, "xid": event.xid, "commit_ts": event.commit_ts,
        "snapshot": event.snapshot,
        "columns": [{"name": c.name, "type": c.type, "key": c.key} for c in event.columns],
        "before": None if event.before is None else dict(event.before),
        "after": None if event.after is None else dict(event.after),
        "unchanged": list(event.unchanged),
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, contract.PARSED_SCHEMA, record)
    return b"\xc3\x01" + contract.SCHEMA_FINGERPRINT[::-1] + buf.getvalue()


@settings(max_examples=400, deadline=None)
@given(EVENTS)
def test_encode_writes_what_fastavro_writes(event: ChangeEvent) -> None:
    assert contract.encode(event) == fastavro_encoding(event)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_encoded_event_decodes_to_itself(event: ChangeEvent) -> None:
    decoded = contract.decode(contract.encode(event))
    assert decoded.identity == event.identity
    assert (decoded.op, decoded.xid, decoded.snapshot, decoded.unchanged, decoded.version) == (
        event.op, event.xid, event.snapshot, event.unchanged, event.version)
    assert decoded.commit_ts == event.commit_ts
    assert decoded.columns == event.columns
    assert (decoded.before, decoded.after) == (event.before, event.after)


def event(**changes: Any) -> ChangeEvent:
    base = ChangeEvent("c", "public", "sales_order", 0x16B3748, 1, dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                       (Column("id", "integer", True),), after={"id": "1"})
    return dataclasses.replace(base, **changes)


def test_columns_of_a_new_tuple_are_encoded_afresh() -> None:
    first = event(columns=(Column("id", "integer", True),))
    second = event(columns=(Column("id", "bigint", True), Column("name", "text")))
    for e in (first, second, first):
        assert contract.encode(e) == fastavro_encoding(e)


@pytest.mark.parametrize(("changes", "problem"), [
    ({"op": "x"}, "'x'"),
    ({"xid": 2**63}, "outside Avro's long range"),
    ({"commit_ts": dt.datetime(2026, 1, 2)}, "timezone-aware"),
    ({"after": {"id": 1}}, "'int' object has no attribute 'encode'"),
])
def test_an_event_off_the_contract_is_a_contract_error_naming_it(changes: dict[str, Any],
                                                                  problem: str) -> None:
    with pytest.raises(ContractError, match=r"public\.sales_order at LSN 16B3748 seq 1") as info:
        contract.encode(event(**changes))
    assert problem in str(info.value)


def test_the_encoder_caches_stay_bounded() -> None:
    for i in range(4100):
        e = event(columns=(Column(f"c{i}", "text", True),), after={f"c{i}": str(i)})
        assert contract.decode(contract.encode(e)).after == {f"c{i}": str(i)}
    assert len(contract._COLUMN_ARRAYS) <= 4096
    assert len(contract._NAMES) <= 4096
    assert contract.encode(e) == fastavro_encoding(e)

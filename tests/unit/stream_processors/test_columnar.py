"""The whole-batch path against the per-event one: same files, same poison, on the same records."""

import base64
import dataclasses
import datetime as dt
import decimal
import re

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_processors import columnar
from stream_processors.columnar import DecodedBatch, parse_batch
from stream_processors.files import BatchId, batch_files
from stream_processors.records import parse_record
from tests.events import (
    COLUMNS,
    SAMPLE_VALUES,
    TS3,
    aggregated,
    change,
    load,
    sales_order_values,
    sales_orders,
)
from totes_cdc import contract, kpl, textcolumns
from totes_cdc.contract import Column

BATCH = BatchId("shardId-000000000000", "1", "9")


def raw_key(partition):
    return partition.key("raw/", BATCH, ".avro")


def per_event(records):
    """What the handler did before the whole-batch path: records.parse_record, record by record."""
    parsed = [parse_record(data, key, str(n)) for n, (key, data) in enumerate(records)]
    return ([e for p in parsed for e in p.events], tuple(x for p in parsed for x in p.poison))


def files(events):
    return [(f.partition, f.events, f.avro, f.parquet) for f in batch_files(events, raw_key)]


def comparable(poison):
    """Poison with the object addresses some fastavro errors name taken out."""
    return [dataclasses.replace(p, error=re.sub(r" at 0x[0-9a-f]+", "", p.error)) for p in poison]


def both(records):
    """(whole-batch result, per-event result) of the same Kinesis records."""
    parsed = parse_batch([(data, key, str(n)) for n, (key, data) in enumerate(records)])
    events, poison = per_event(records)
    return (files(parsed.events), comparable(parsed.poison)), (files(events), comparable(poison))


def mixed_events():
    late = dt.datetime(2024, 11, 15, 23, 59, 59, 999999, tzinfo=dt.UTC)
    after_midnight = late + dt.timedelta(microseconds=1)
    events = sales_orders(40)  # more than one Avro block (16 kB) in the raw file
    for n, (table, values) in enumerate(SAMPLE_VALUES.items()):
        events += [change(table, values, 100 + n, 1, op="r"), change(table, values, 100 + n, 2),
                   change(table, values, 100 + n, 3, op="u", commit_ts=late),
                   change(table, values, 100 + n, 4, op="d", commit_ts=after_midnight)]
    extra = (*COLUMNS["currency"], Column("currency_name", "text"))
    return [*events,
            change("currency", {**SAMPLE_VALUES["currency"], "currency_name": "Pfund £ " * 20},
                   200, 1, columns=extra),  # a column added mid-batch; a value over 63 bytes
            change("sales_order", {**sales_order_values(7), "unit_price": None}, 201, 1),
            change("payment", {}, 202, 1, op="t"),
            # REPLICA IDENTITY FULL: an update carrying its old image, a delete its whole row
            dataclasses.replace(change("payment", SAMPLE_VALUES["payment"], 203, 1, op="u"),
                                before=SAMPLE_VALUES["payment"]),
            dataclasses.replace(change("payment", SAMPLE_VALUES["payment"], 203, 2, op="d"),
                                before=SAMPLE_VALUES["payment"]),
            change("sales_order", sales_order_values(8), 12_345_678_901, contract.snapshot_seq(3),
                   op="r")]


def test_whole_batch_files_are_byte_identical_to_the_per_event_files():
    records = aggregated(mixed_events(), per_record=7)
    parsed = parse_batch([(data, key, str(n)) for n, (key, data) in enumerate(records)])
    assert isinstance(parsed.events, DecodedBatch)
    whole, old = both(records)
    assert whole == old
    assert len(whole[0]) == 12 and whole[1] == []  # six tables, two commit dates


def test_a_capture_shaped_batch_takes_the_whole_batch_path():
    event = load("kinesis_totesys_batch.json")
    records = [(base64.b64decode(r["kinesis"]["data"]), r["kinesis"]["partitionKey"],
                r["kinesis"]["sequenceNumber"]) for r in event["Records"]]
    assert isinstance(parse_batch(records).events, DecodedBatch)


@pytest.mark.parametrize("event", [
    change("payment", {**SAMPLE_VALUES["payment"], "payment_amount": "12.345"}, 5, 1),
    change("sales_order", {**sales_order_values(1), "units_sold": "2147483648"}, 5, 1),
    change("payment", {**SAMPLE_VALUES["payment"], "paid": "maybe"}, 5, 1),
    change("sales_order", {**sales_order_values(1), "created_at": "0000-11-03 14:20:49.962"}, 5, 1),
    change("payment", {**SAMPLE_VALUES["payment"], "payment_date": "0000-11-04"}, 5, 1,
           columns=tuple(Column(c.name, "date" if c.name == "payment_date" else c.type, c.key)
                         for c in COLUMNS["payment"])),
], ids=["decimal-scale", "integer-range", "boolean", "timestamp-year-0", "date-year-0"])
def test_a_poison_value_sends_the_batch_per_event_with_the_same_result(event):
    records = aggregated([*sales_orders(5), event, *sales_orders(5, lsn=2000)], per_record=4)
    parsed = parse_batch([(data, key, str(n)) for n, (key, data) in enumerate(records)])
    assert isinstance(parsed.events, list) and len(parsed.poison) == 1
    whole, old = both(records)
    assert whole == old


@pytest.mark.parametrize("events", [
    [change("sales_order", sales_order_values(1), 1, 1),
     change("sales_order", {**sales_order_values(1), "unit_price": "2.4300"}, 2, 1,
            columns=tuple(Column(c.name, "numeric(12,4)" if c.name == "unit_price" else c.type, c.key)
                          for c in COLUMNS["sales_order"]))],
    [change("address", {**SAMPLE_VALUES["address"], "phone": None}, 4, 1, op="u",
            unchanged=["phone"])],
], ids=["type-changed-mid-batch", "unchanged-toast"])
def test_irregular_batches_go_per_event_with_the_same_files(events):
    records = aggregated(events)
    assert isinstance(parse_batch([(d, k, "1") for k, d in records]).events, list)
    whole, old = both(records)
    assert whole == old


def test_values_outside_the_canonical_text_form_are_parsed_as_the_per_event_path_parses_them():
    values = {**sales_order_values(1), "units_sold": " 42", "unit_price": "2.5",
              "created_at": "2022-11-03T14:20:49.962"}
    records = aggregated([change("sales_order", values, 1, 1), *sales_orders(3)])
    assert isinstance(parse_batch([(d, k, "1") for k, d in records]).events, DecodedBatch)
    whole, old = both(records)
    assert whole == old


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_corrupted_record_gives_what_the_per_event_path_gives(data):
    """Whatever a flipped, dropped or added byte does to one event of a batch (a different but
    valid event, poison, a truncated body), both paths agree on the files and the poison."""
    events = mixed_events()[39:48]  # two tables, two dates, every operation but t
    payloads = [contract.encode(e) for e in events]
    target = data.draw(st.integers(0, len(payloads) - 1))
    body = bytearray(payloads[target])
    at = data.draw(st.integers(0, len(body) - 1))
    how = data.draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
    if how == "flip":
        body[at] = data.draw(st.integers(0, 255))
    elif how == "drop":
        del body[at]
    elif how == "insert":
        body.insert(at, data.draw(st.integers(0, 255)))
    else:
        del body[at:]
    payloads[target] = bytes(body)
    records = [(e.partition_key, kpl.aggregate([(e.partition_key, p)]))
               for e, p in zip(events, payloads, strict=True)]
    whole, old = both(records)
    assert whole == old


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=40)), min_size=1, max_size=8),
       st.data())
def test_kpl_payloads_is_deaggregate_without_the_keys_or_refuses(records, data):
    aggregate = bytearray(kpl.aggregate(records))
    if data.draw(st.booleans()):  # corrupt the protobuf, keeping the digest right
        at = data.draw(st.integers(4, len(aggregate) - 17))
        aggregate[at] = data.draw(st.integers(0, 255))
        proto = bytes(aggregate[4:-16])
        aggregate = bytearray(kpl.MAGIC + proto + kpl.hashlib.md5(proto, usedforsecurity=False).digest())
    try:
        expected = [payload for _, payload in kpl.deaggregate(bytes(aggregate))]
    except (kpl.AggregationError, UnicodeDecodeError):
        expected = None
    try:
        got = kpl.payloads(bytes(aggregate))
    except (kpl.AggregationError, UnicodeDecodeError):
        return  # refused: the per-event path (deaggregate) reads it
    assert got == expected


def test_canonical_columns_are_cast_by_arrow_nulls_included(monkeypatch):
    def refuse(pg_type):
        raise AssertionError(f"{pg_type} parsed value by value")

    monkeypatch.setattr(textcolumns, "value_parser", refuse)
    text = pa.array(["t", None, "f"])
    assert columnar.typed(text, "boolean").to_pylist() == [True, None, False]
    assert columnar.typed(pa.array(["-12.5", None]), "numeric(10,2)").to_pylist() == [
        decimal.Decimal("-12.50"), None]
    assert columnar.typed(pa.array(["2024-02-29 23:59:59.5", None]), TS3).to_pylist() == [
        dt.datetime(2024, 2, 29, 23, 59, 59, 500000), None]


def test_an_unknown_contract_schema_is_decoded_event_by_event(monkeypatch):
    monkeypatch.setattr(columnar, "_LAYOUT", "0" * 16)
    records = aggregated(sales_orders(3))
    assert isinstance(parse_batch([(d, k, "1") for k, d in records]).events, list)


@pytest.mark.parametrize("bad", [b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80"],
                         ids=["surrogate", "overlong", "beyond-unicode"])
def test_a_value_that_is_not_utf8_is_poison_on_both_paths(bad):
    payload = contract.encode(change("currency", SAMPLE_VALUES["currency"], 1, 1)).replace(b"GBP", bad)
    records = [("k", kpl.aggregate([("k", payload), *[(e.partition_key, contract.encode(e))
                                                      for e in sales_orders(3)]]))]
    whole, old = both(records)
    assert whole == old and len(whole[1]) == 1


def test_a_body_with_a_long_written_in_more_bytes_than_needed_gives_the_per_event_files():
    """Avro reads 0x82 0x00 as 1, as 0x02 is; the per-event path writes the raw file with the
    shortest form, so the whole-batch path, which keeps the bodies as received, must not take it."""
    one, two = (contract.encode(change("currency", SAMPLE_VALUES["currency"], 1, seq)) for seq in (1, 2))
    at = next(i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b)
    padded = one[:at] + bytes([one[at] | 0x80, 0]) + one[at + 1:]
    assert contract.decode(padded) == contract.decode(one)
    whole, old = both([("k", kpl.aggregate([("k", padded)]))])
    assert whole == old


def test_a_batch_whose_records_hold_no_user_record_writes_nothing():
    proto = b"\x0a\x01k"  # an aggregate with a partition key table and no record
    data = kpl.MAGIC + proto + kpl.hashlib.md5(proto, usedforsecurity=False).digest()
    whole, old = both([("k", data)])
    assert whole == old == ([], [])

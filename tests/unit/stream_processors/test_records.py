import datetime as dt
import decimal

import pytest

from stream_processors.records import parse_record, typed_event, value_parser
from tests.events import COLUMNS, SAMPLE_VALUES, TS3, change
from totes_cdc import contract, kpl


@pytest.mark.parametrize(("pg_type", "text", "value"), [
    ("integer", "-2147483648", -2147483648),
    ("smallint", "32767", 32767),
    ("bigint", "9223372036854775807", 9223372036854775807),
    ("numeric(10,2)", "552548.62", decimal.Decimal("552548.62")),
    ("numeric(10,2)", "99999999.99", decimal.Decimal("99999999.99")),
    ("numeric(10,2)", "-0.5", decimal.Decimal("-0.5")),
    ("boolean", "t", True),
    ("boolean", "f", False),
    (TS3, "2022-11-03 14:20:49.962", dt.datetime(2022, 11, 3, 14, 20, 49, 962000)),
    (TS3, "2022-11-03 14:20:49", dt.datetime(2022, 11, 3, 14, 20, 49)),
    ("date", "2022-11-10", dt.date(2022, 11, 10)),
    ("text", "Leannon, Predovic and Morar", "Leannon, Predovic and Morar"),
    ("character varying(3)", "GBP", "GBP"),
    ('"PaymentTypeName"', "SALES_RECEIPT", "SALES_RECEIPT"),
])
def test_value_parser_types_every_totesys_value(pg_type, text, value):
    assert value_parser(pg_type)(text) == value


@pytest.mark.parametrize(("pg_type", "text"), [
    ("integer", "2147483648"),
    ("integer", "twelve"),
    ("numeric(10,2)", "1.234"),
    ("numeric(10,2)", "100000000.00"),
    ("numeric(10,2)", "NaN"),
    ("numeric(10,2)", "abc"),
    ("boolean", "yes"),
    (TS3, "infinity"),
])
def test_value_parser_rejects_values_arrow_cannot_hold(pg_type, text):
    with pytest.raises((ValueError, ArithmeticError)):
        value_parser(pg_type)(text)


def test_typed_event_uses_before_image_for_delete_and_nothing_for_truncate():
    deleted = typed_event(contract.encode(change("sales_order", SAMPLE_VALUES["sales_order"], 9, 1, op="d")))
    assert deleted.row == {"sales_order_id": 2}
    truncated = typed_event(contract.encode(change("sales_order", {}, 9, 2, op="t")))
    assert truncated.row == {}


def test_typed_event_error_names_table_position_column_and_value():
    bad = change("payment", {**SAMPLE_VALUES["payment"], "paid": "maybe"}, 77, 3)
    expected = r"public\.payment lsn 77 seq 3: column paid \(boolean\) value 'maybe'"
    with pytest.raises(contract.ContractError, match=expected):
        typed_event(contract.encode(bad))


def test_parse_record_keeps_good_user_records_around_a_poison_one():
    good = [change("currency", SAMPLE_VALUES["currency"], 5, i) for i in (1, 2)]
    data = kpl.aggregate([(good[0].partition_key, contract.encode(good[0])), ("k", b"garbage"),
                          (good[1].partition_key, contract.encode(good[1]))])
    parsed = parse_record(data, "outer", "42")
    assert [e.event.seq for e in parsed.events] == [1, 2]
    assert len(parsed.poison) == 1
    poison = parsed.poison[0]
    assert (poison.sequence_number, poison.sub_sequence, poison.partition_key, poison.data) == (
        "42", 1, "k", b"garbage")
    assert "bad marker" in poison.error


def test_parse_record_takes_a_plain_record_as_one_user_record():
    event = change("payment_type", SAMPLE_VALUES["payment_type"], 5, 1)
    parsed = parse_record(contract.encode(event), event.partition_key, "7")
    assert [e.event for e in parsed.events] == [event]
    assert parsed.events[0].record["table"] == "payment_type"


def test_parse_record_dead_letters_a_record_that_cannot_be_deaggregated():
    body = b"\x1a\xff\xff"  # a field claiming more bytes than there are
    import hashlib
    data = kpl.MAGIC + body + hashlib.md5(body).digest()
    parsed = parse_record(data, "pk", "8")
    assert parsed.events == ()
    assert parsed.poison[0].sub_sequence is None
    assert parsed.poison[0].data == data
    assert "cannot de-aggregate" in parsed.poison[0].error


def test_parse_record_rejects_an_unknown_schema_fingerprint():
    data = contract.encode(change("address", SAMPLE_VALUES["address"], 1, 1))
    parsed = parse_record(data[:2] + b"\0" * 8 + data[10:], "pk", "9")
    assert "unknown schema" in parsed.poison[0].error
    assert COLUMNS["address"][0].key

import datetime as dt
import decimal
import io

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from stream_processors.files import BatchId, Partition, avro_file, parquet_file, parquet_table, partitions
from stream_processors.records import typed_event
from tests.events import COLUMNS, SAMPLE_VALUES, change, sales_order_values
from totes_cdc import contract
from totes_cdc.contract import Column


def typed(events):
    return [typed_event(contract.encode(e)) for e in events]


def test_keys_name_table_date_shard_and_sequence_range():
    batch = BatchId("shardId-000000000001", "17", "42")
    key = Partition("public", "sales_order", dt.date(2024, 11, 15)).key("raw/", batch, ".avro")
    assert key == "raw/public.sales_order/date=2024-11-15/shardId-000000000001-17-42.avro"


def test_partitions_split_tables_and_utc_commit_dates_keeping_order():
    late = dt.datetime(2024, 11, 15, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-1)))
    events = typed([change("sales_order", sales_order_values(1), 1, 1),
                    change("payment", SAMPLE_VALUES["payment"], 1, 2),
                    change("sales_order", sales_order_values(2), 2, 1, commit_ts=late),
                    change("sales_order", sales_order_values(3), 3, 1)])
    groups = partitions(events)
    assert [(p.table, p.date.isoformat(), [e.event.lsn for e in g]) for p, g in groups.items()] == [
        ("sales_order", "2024-11-15", [1, 3]), ("payment", "2024-11-15", [1]),
        ("sales_order", "2024-11-16", [2])]


def test_avro_file_holds_the_records_as_received_and_is_byte_identical_on_rewrite():
    events = typed([change("transaction", SAMPLE_VALUES["transaction"], 3, 1),
                    change("transaction", SAMPLE_VALUES["transaction"], 3, 2, op="d")])
    records = [e.record for e in events]
    first = avro_file(records, "raw/k.avro")
    assert first == avro_file(records, "raw/k.avro")
    read = list(fastavro.reader(io.BytesIO(first)))
    assert [contract.from_record(r) for r in read] == [e.event for e in events]


def test_parquet_rows_hold_after_before_or_only_meta_by_operation():
    events = typed([change("payment", SAMPLE_VALUES["payment"], 10, 1, op="r"),
                    change("payment", SAMPLE_VALUES["payment"], 11, 1, op="d"),
                    change("payment", {}, 12, 1, op="t")])
    table = parquet_table(events)
    rows = table.to_pylist()
    assert [r["_op"] for r in rows] == ["r", "d", "t"]
    assert rows[0]["payment_amount"] == decimal.Decimal("552548.62")
    assert rows[1]["payment_id"] == 2 and rows[1]["payment_amount"] is None
    assert rows[2]["payment_id"] is None and rows[2]["_lsn"] == 12
    assert rows[0]["_snapshot"] is True and rows[0]["_xid"] is None
    assert table.schema.field("payment_amount").metadata[b"pg_type"] == b"numeric(10,2)"


def test_parquet_takes_the_union_of_columns_when_a_column_is_added_mid_batch():
    extra = (*COLUMNS["currency"], Column("currency_name", "text"))
    events = typed([change("currency", SAMPLE_VALUES["currency"], 1, 1),
                    change("currency", {**SAMPLE_VALUES["currency"], "currency_name": "Pound"}, 2, 1,
                           columns=extra)])
    table = pq.read_table(io.BytesIO(parquet_file(events)))
    assert table.column("currency_name").to_pylist() == [None, "Pound"]


def test_parquet_writes_a_column_whose_type_changed_inside_the_batch_as_text():
    altered = tuple(Column(c.name, "numeric(12,4)" if c.name == "unit_price" else c.type, c.key)
                    for c in COLUMNS["sales_order"])
    events = typed([change("sales_order", sales_order_values(1), 1, 1),
                    change("sales_order", {**sales_order_values(1), "unit_price": "2.4300"}, 2, 1,
                           columns=altered)])
    table = parquet_table(events)
    assert table.schema.field("unit_price").type == pa.string()
    assert table.column("unit_price").to_pylist() == ["2.43", "2.4300"]
    assert table.schema.field("units_sold").type == pa.int32()


def test_parquet_keeps_unchanged_toast_columns_listed_and_null():
    event = change("address", {**SAMPLE_VALUES["address"], "phone": None}, 4, 1, op="u",
                   unchanged=["phone"])
    row = parquet_table(typed([event])).to_pylist()[0]
    assert row["_unchanged"] == ["phone"] and row["phone"] is None

"""The handler against the AWS emulator in server mode: real S3, real S3->SQS notifications."""

import base64
import datetime as dt
import decimal
import io
import json
from urllib.parse import unquote_plus

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_processors import handler as handler_module
from stream_processors.handler import handler
from tests.events import COLUMNS, SAMPLE_VALUES, Context, aggregated, change, lambda_event, sales_orders
from totes_cdc.contract import Column
from totes_cdc.settings import settings

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(aws):
    handler_module._s3.cache_clear()
    return aws.client("s3")


def objects(s3, bucket):
    return {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def read_parquet(s3, key):
    return s3.get_object(Bucket=settings()["buckets"]["processed"], Key=key)["Body"].read()


def notified_keys(aws):
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=settings()["queues"]["processed_files"])["QueueUrl"]
    keys = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=1).get("Messages", []):
        for message in messages:
            body = json.loads(message["Body"])
            keys += [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", [])]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return keys


def test_batch_replayed_three_times_yields_the_same_files_once(aws, s3):
    events = [*sales_orders(40), change("payment", SAMPLE_VALUES["payment"], 1001, 1)]
    event = lambda_event(aggregated(events, per_record=15), first_sequence=3)
    for _ in range(3):
        assert handler(event, Context()) == {"batchItemFailures": []}
    raw = objects(s3, "totes-cdc-raw")
    processed = objects(s3, "totes-cdc-processed")
    assert sorted(processed) == [
        "processed/public.payment/date=2024-11-15/shardId-000000000000-3-5.parquet",
        "processed/public.sales_order/date=2024-11-15/shardId-000000000000-3-5.parquet"]
    assert len(raw) == 2
    assert sorted(notified_keys(aws)) == sorted(processed)
    handler(event, Context())
    assert objects(s3, "totes-cdc-raw") == raw and objects(s3, "totes-cdc-processed") == processed


def test_poison_record_goes_to_dead_letter_with_its_error_while_the_rest_lands(aws, s3):
    bad = change("payment", {**SAMPLE_VALUES["payment"], "payment_amount": "12.345"}, 2000, 2)
    records = aggregated(sales_orders(10), per_record=5)
    records.insert(1, aggregated([change("payment", SAMPLE_VALUES["payment"], 2000, 1), bad])[0])
    response = handler(lambda_event(records, first_sequence=70), Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": "71"}]}
    [dead] = objects(s3, "totes-cdc-dead-letter")
    assert dead == "records/shardId-000000000000/71-1.json"
    doc = json.loads(s3.get_object(Bucket="totes-cdc-dead-letter", Key=dead)["Body"].read())
    assert "column payment_amount (numeric(10,2)) value '12.345'" in doc["error"]
    assert doc["shard_id"] == "shardId-000000000000" and doc["sequence_number"] == "71"
    assert base64.b64decode(doc["data_base64"])[:2] == b"\xc3\x01"
    processed = objects(s3, "totes-cdc-processed")
    rows = {k.split("/")[1]: pq.read_table(io.BytesIO(read_parquet(s3, k))).num_rows for k in processed}
    assert rows == {"public.sales_order": 10, "public.payment": 1}


EXPECTED_ARROW = {
    "integer": pa.int32(), "text": pa.string(), "character varying(3)": pa.string(),
    "numeric(10,2)": pa.decimal128(10, 2), "boolean": pa.bool_(),
    "timestamp(3) without time zone": pa.timestamp("us"),
    '"PaymentTypeName"': pa.string(), '"TransactionType"': pa.string(),
}


def test_parquet_reads_back_typed_in_pyarrow_and_pandas_for_every_totesys_column_type(aws, s3):
    events = [change(t, SAMPLE_VALUES[t], 3000, i + 1) for i, t in enumerate(sorted(SAMPLE_VALUES))]
    handler(lambda_event(aggregated(events)), Context())
    tables = {k.split("/")[1].removeprefix("public."): pq.read_table(io.BytesIO(read_parquet(s3, k)))
              for k in objects(s3, "totes-cdc-processed")}
    assert sorted(tables) == sorted(SAMPLE_VALUES)
    seen_types = set()
    for name, table in tables.items():
        for column in COLUMNS[name]:
            assert table.schema.field(column.name).type == EXPECTED_ARROW[column.type], column
            seen_types.add(column.type)
        assert table.schema.field("_commit_ts").type == pa.timestamp("us", tz="UTC")
    assert seen_types == set(EXPECTED_ARROW)

    sales = tables["sales_order"].to_pylist()[0]
    assert sales["unit_price"] == decimal.Decimal("2.43")
    assert sales["created_at"] == dt.datetime(2022, 11, 3, 14, 20, 49, 962000)
    assert sales["last_updated"] == dt.datetime(2022, 11, 3, 14, 20, 49)
    assert sales["agreed_delivery_date"] == "2022-11-10" and sales["units_sold"] == 84754
    payment = tables["payment"].to_pylist()[0]
    assert payment["paid"] is False and payment["payment_amount"] == decimal.Decimal("552548.62")
    assert tables["currency"].to_pylist()[0]["currency_code"] == "GBP"
    assert tables["payment_type"].to_pylist()[0]["payment_type_name"] == "SALES_RECEIPT"
    transaction = tables["transaction"].to_pylist()[0]
    assert transaction["transaction_type"] == "PURCHASE" and transaction["sales_order_id"] is None
    assert tables["address"].to_pylist()[0]["address_line_2"] is None

    frame = pd.read_parquet(io.BytesIO(read_parquet(s3, next(
        k for k in objects(s3, "totes-cdc-processed") if "payment/" in k))))
    assert str(frame["payment_id"].dtype) == "int32"
    assert str(frame["paid"].dtype) == "bool"
    assert str(frame["created_at"].dtype) == "datetime64[us]"
    assert str(frame["_commit_ts"].dtype) == "datetime64[us, UTC]"
    assert frame["payment_amount"].iloc[0] == decimal.Decimal("552548.62")
    assert frame["created_at"].iloc[0] == pd.Timestamp("2022-11-03 14:20:52.187")
    assert frame["_op"].iloc[0] == "c" and frame["_lsn"].iloc[0] == 3000
    tx = pd.read_parquet(io.BytesIO(read_parquet(s3, next(
        k for k in objects(s3, "totes-cdc-processed") if "transaction/" in k))))
    assert pd.isna(tx["sales_order_id"].iloc[0]) and tx["purchase_order_id"].iloc[0] == 2


def test_add_column_mid_stream_yields_the_new_column(aws, s3):
    with_region = (*COLUMNS["currency"], Column("region", "text"))
    old = change("currency", SAMPLE_VALUES["currency"], 4000, 1)
    new = change("currency", {**SAMPLE_VALUES["currency"], "region": "Europe"}, 4001, 1, columns=with_region)
    handler(lambda_event(aggregated([old, new]), first_sequence=1), Context())
    handler(lambda_event(aggregated([new]), first_sequence=2), Context())
    keys = sorted(objects(s3, "totes-cdc-processed"))
    mixed, later = (pq.read_table(io.BytesIO(read_parquet(s3, k))) for k in keys)
    assert mixed.column("region").to_pylist() == [None, "Europe"]
    assert later.column("region").to_pylist() == ["Europe"]
    assert mixed.column("currency_code").to_pylist() == ["GBP", "GBP"]

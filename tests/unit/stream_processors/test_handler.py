"""The handler against S3 mocked in-process (moto); the emulator-in-server-mode tests are integration."""

import base64
import io
import json
from collections.abc import Iterator

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from stream_processors import handler as handler_module
from stream_processors.errors import StoreError
from stream_processors.handler import handler
from tests.events import (
    COLUMNS,
    Context,
    aggregated,
    change,
    lambda_event,
    load,
    sales_order_values,
    sales_orders,
)
from totes_cdc.settings import OVERRIDES_ENV, settings
from warehouse_loader.apply import table_of


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", settings()["region"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    handler_module._s3.cache_clear()
    with mock_aws():
        client = boto3.client("s3")
        for bucket in settings()["buckets"].values():
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={
                "LocationConstraint": settings()["region"]})
        yield client
    handler_module._s3.cache_clear()


def keys(client, bucket):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_stored_totesys_event_lands_one_raw_and_one_processed_file_per_table(s3, capsys):
    event = load("kinesis_totesys_batch.json")
    assert handler(event, Context()) == {"batchItemFailures": []}
    processed = keys(s3, "totes-cdc-processed")
    assert [k.split("/")[1] for k in processed] == [
        "public.address", "public.currency", "public.payment", "public.payment_type",
        "public.sales_order", "public.transaction"]
    assert all(k.endswith("/date=2024-11-15/shardId-000000000000-"
                          "49590338271490256608559692538361571095921575989136588898-"
                          "49590338271490256608559692538361571095921575989136588899.parquet")
               for k in processed)
    assert len(keys(s3, "totes-cdc-raw")) == 6
    body = s3.get_object(Bucket="totes-cdc-processed", Key=processed[2])["Body"].read()
    payments = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [(p["_op"], p["paid"]) for p in payments] == [("c", False), ("u", True)]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf[-1]["EventsProcessed"] == [8.0] and emf[-1]["RecordsDeadLettered"] == [0.0]


def test_empty_batch_writes_nothing(s3):
    assert handler({"Records": []}, Context()) == {"batchItemFailures": []}
    assert keys(s3, "totes-cdc-raw") == [] and keys(s3, "totes-cdc-processed") == []


def test_poison_record_is_dead_lettered_and_reported_while_the_rest_lands(s3):
    records = aggregated(sales_orders(30), per_record=10)
    records.insert(1, ("public.sales_order/99", b"not an event"))
    event = lambda_event(records, first_sequence=100)
    response = handler(event, Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": "101"}]}
    [dead] = keys(s3, "totes-cdc-dead-letter")
    assert dead == "records/shardId-000000000000/101-0.json"
    doc = json.loads(s3.get_object(Bucket="totes-cdc-dead-letter", Key=dead)["Body"].read())
    assert base64.b64decode(doc["data_base64"]) == b"not an event"
    assert "bad marker" in doc["error"] and doc["sequence_number"] == "101"
    [processed] = keys(s3, "totes-cdc-processed")
    body = s3.get_object(Bucket="totes-cdc-processed", Key=processed)["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows == 30


def test_a_batch_of_only_poison_is_reported_not_raised(s3):
    event = lambda_event([("k", b"junk"), ("k", b"more junk")], first_sequence=5)
    response = handler(event, Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": "5"}, {"itemIdentifier": "6"}]}
    assert len(keys(s3, "totes-cdc-dead-letter")) == 2


def test_replayed_batch_rewrites_nothing(s3):
    event = lambda_event(aggregated(sales_orders(5)), first_sequence=1)
    handler(event, Context())
    before = {k: s3.head_object(Bucket="totes-cdc-raw", Key=k)["LastModified"]
              for k in keys(s3, "totes-cdc-raw")}
    handler(event, Context())
    after = {k: s3.head_object(Bucket="totes-cdc-raw", Key=k)["LastModified"]
             for k in keys(s3, "totes-cdc-raw")}
    assert before == after and len(before) == 1


@pytest.mark.filterwarnings("ignore:No application metrics")  # it raised before counting anything
def test_s3_failure_raises_a_transient_error_naming_the_object(s3, monkeypatch):
    monkeypatch.setitem(settings()["buckets"], "raw", "no-such-bucket")
    with pytest.raises(StoreError, match=r"s3://no-such-bucket/raw/public\.sales_order/"):
        handler(lambda_event(aggregated(sales_orders(2))), Context())


def test_an_event_whose_image_names_an_undeclared_column_is_dead_lettered_not_a_crash(s3):
    """An image value for a column the event does not declare cannot be typed: poison. It used
    to be typed as text and then fail the whole file (ArrowTypeError) when another event of the
    file declared that column as an integer, so the batch failed instead of landing."""
    declared = tuple(c for c in COLUMNS["sales_order"] if c.name != "units_sold")
    odd = change("sales_order", sales_order_values(2), 1000, 2, columns=declared)
    records = aggregated([*sales_orders(1), odd, *sales_orders(3, lsn=1001)], per_record=1)
    response = handler(lambda_event(records, first_sequence=50), Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": "51"}]}
    [dead] = keys(s3, "totes-cdc-dead-letter")
    doc = json.loads(s3.get_object(Bucket="totes-cdc-dead-letter", Key=dead)["Body"].read())
    assert "column units_sold is not among the event's columns" in doc["error"]
    [processed] = keys(s3, "totes-cdc-processed")
    body = s3.get_object(Bucket="totes-cdc-processed", Key=processed)["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows == 4


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    settings.cache_clear()
    yield
    settings.cache_clear()  # the next test reads the file as it is


@pytest.mark.parametrize("environment", [
    {"TOTES_CDC_PROCESSED_PREFIX": "elsewhere/"},
    {OVERRIDES_ENV: json.dumps({"prefixes": {"processed": "elsewhere/"}})},
], ids=["per-field variable", "settings override"])
def test_the_loader_takes_every_file_the_processor_writes(monkeypatch, s3, fresh_settings, environment):
    """The processor once read its prefixes from per-field variables that the loader and the S3
    notification (Terraform, the local stack: settings.json) never read: a processed prefix set
    that way made the loader dead-letter every file, or never hear of it."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    handler(lambda_event(aggregated(sales_orders(2))), Context())
    cfg = settings()
    [key] = keys(s3, cfg["buckets"]["processed"])
    assert key.startswith(cfg["prefixes"]["processed"]) and key.endswith(cfg["suffixes"]["processed"])
    assert table_of(key) == "sales_order"

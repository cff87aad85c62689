"""The waterfall's "capture read" stage: capture stamps each Kinesis record with when it read the
record's last event (a KPL tag), the processor keeps the batch's latest stamp in its files' stage
times, so the loader can split source commit -> Kinesis at capture."""

from __future__ import annotations

import base64
import io
import json
import time

import pyarrow.parquet as pq

from capture.producer import Producer
from stream_processors.columnar import decode
from stream_processors.files import BatchId, Partition, batch_files
from stream_processors.handler import batch_id
from tests.events import aggregated, lambda_event, sales_orders
from tests.unit.capture.test_producer import FakeSink
from totes_cdc import contract, kpl, stages

RECORDS = [("public.sales_order/1", b"one"), ("public.sales_order/2", b"two"),
           ("public.sales_order/1", b"three")]


def test_an_aggregate_carries_its_capture_read_time_and_its_records_unchanged() -> None:
    stamped = kpl.aggregate(RECORDS, read_at=1_700_000_000.123456)
    assert kpl.capture_read(stamped) == 1_700_000_000.123456
    assert kpl.deaggregate(stamped) == RECORDS
    assert kpl.payloads(stamped) == [data for _, data in RECORDS]


def test_a_record_without_a_capture_read_time_has_none() -> None:
    assert kpl.capture_read(kpl.aggregate(RECORDS)) is None
    assert kpl.capture_read(b"a plain user record") is None
    assert kpl.capture_read(kpl.aggregate([])) is None


def test_capture_stamps_each_record_with_when_it_read_the_records_last_event() -> None:
    sink = FakeSink()
    producer = Producer(sink, [].append, backoff_seconds=0, max_backoff_seconds=0)
    before = time.time()
    producer.add("public.t/1", b"first")
    time.sleep(0.05)
    middle = time.time()
    producer.add("public.t/1", b"last")
    after = time.time()
    producer.flush()
    producer.close()
    [record] = sink.accepted["a"] + sink.accepted["b"]
    read = kpl.capture_read(record.data)
    assert read is not None and before < middle <= read <= after


def test_the_batch_capture_read_is_the_latest_of_its_records() -> None:
    records = [("public.sales_order/1", kpl.aggregate(RECORDS, read_at=t)) for t in (5.0, 7.5, 6.0)]
    records.append(("public.sales_order/1", kpl.aggregate(RECORDS)))  # not stamped: left out
    event = lambda_event(records)
    data = [base64.b64decode(r["kinesis"]["data"]) for r in event["Records"]]
    assert batch_id(event["Records"], 10.0, data).captured == 7.5


def test_processed_file_carries_the_capture_read_time() -> None:
    batch = BatchId("shardId-000000000000", "1", "2", accepted=100.25, read=101.5, captured=99.75)
    payloads = [contract.encode(e) for e in sales_orders(3)]

    def raw_key(partition: Partition) -> str:
        return partition.key("raw/", batch, ".avro")

    [timed] = batch_files(decode(payloads), raw_key, batch)
    times = json.loads(pq.read_schema(io.BytesIO(timed.parquet)).metadata[stages.METADATA_KEY])
    assert times["capture_read"] == 99.75


def test_test_records_are_stamped_as_capture_stamps_them() -> None:
    [(_, data)] = aggregated(sales_orders(2), read_at=42.0)
    assert kpl.capture_read(data) == 42.0

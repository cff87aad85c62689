"""The stage times a processed file carries for the latency waterfall (Parquet key-value metadata)."""

import io
import json
import time

import pyarrow.parquet as pq
import pytest

from stream_processors.columnar import decode
from stream_processors.files import BatchId, Partition, batch_files
from stream_processors.handler import batch_id
from stream_processors.records import typed_event
from tests.events import COMMIT_TS, lambda_event, sales_orders
from totes_cdc import contract, stages


def raw_key(partition: Partition) -> str:
    return partition.key("raw/", BatchId("shardId-000000000000", "1", "2"), ".avro")


def whole_and_event_by_event():
    payloads = [contract.encode(e) for e in sales_orders(3)]
    return [decode(payloads), [typed_event(p) for p in payloads]]


@pytest.mark.parametrize("events", whole_and_event_by_event(), ids=["whole batch", "event by event"])
def test_processed_file_carries_accepted_read_and_written_times_and_the_same_columns(events):
    batch = BatchId("shardId-000000000000", "1", "2", accepted=100.25, read=101.5)
    before = time.time()
    [timed] = batch_files(events, raw_key, batch)
    [untimed] = batch_files(events, raw_key)

    times = json.loads(pq.read_schema(io.BytesIO(timed.parquet)).metadata[stages.METADATA_KEY])
    assert times["kinesis_accepted"] == 100.25
    assert times["processor_read"] == 101.5
    assert before <= times["file_written"] <= time.time()
    # The metadata is all that differs: the loader validates the columns, the raw file is the same.
    assert pq.read_table(io.BytesIO(timed.parquet)).equals(pq.read_table(io.BytesIO(untimed.parquet)))
    assert stages.METADATA_KEY not in (pq.read_schema(io.BytesIO(untimed.parquet)).metadata or {})
    assert timed.avro == untimed.avro


def test_stage_times_are_not_part_of_the_batch_identity():
    assert BatchId("s", "1", "2", accepted=1.0, read=2.0) == BatchId("s", "1", "2")


def test_batch_accepted_is_the_latest_kinesis_arrival_of_its_records():
    event = lambda_event([("k", b"a"), ("k", b"b"), ("k", b"c")])
    arrivals = [COMMIT_TS.timestamp() + 0.5, COMMIT_TS.timestamp() + 2.0, COMMIT_TS.timestamp() + 1.0]
    for record, arrival in zip(event["Records"], arrivals, strict=True):
        record["kinesis"]["approximateArrivalTimestamp"] = arrival
    batch = batch_id(event["Records"], 1e9, [b"a", b"b", b"c"])
    assert (batch.accepted, batch.read) == (COMMIT_TS.timestamp() + 2.0, 1e9)

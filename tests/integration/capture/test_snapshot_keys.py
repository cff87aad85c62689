"""Snapshot reads (in the lake) and streamed changes of one row share its partition key, so its shard,
and the same columns."""

from __future__ import annotations

import boto3
import pytest

from tests.integration.capture.conftest import execute, slot_caught_up, wait_for
from tests.integration.capture.lake import read_lake
from totes_cdc import kpl
from totes_cdc.contract import OP_INSERT, ChangeEvent, decode
from totes_cdc.settings import settings

pytestmark = pytest.mark.integration


def stream_events() -> list[tuple[str, ChangeEvent]]:
    """(partition key, event) of every user record on the stream."""
    client = boto3.client("kinesis")
    stream = settings()["stream"]["name"]
    events = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        page = client.get_records(ShardIterator=iterator, Limit=10000)
        for record in page["Records"]:
            events += [(key, decode(data)) for key, data in kpl.deaggregate(record["Data"])]
    return events


def test_composite_key_ordered_unlike_the_columns_gives_one_partition_key(source_dsn, capture_factory):
    execute(source_dsn,
            "CREATE TABLE pair (a integer, b integer, v text, PRIMARY KEY (b, a))",
            "INSERT INTO pair SELECT g, g + 100, 'x' FROM generate_series(1, 3) g")
    service = capture_factory(source_dsn, tables=("pair",))
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(source_dsn, "UPDATE pair SET v = 'y' WHERE a = 1")
    wait_for(slot_caught_up(source_dsn, service.config.slot), what="capture to catch up")
    keyed = [(e.op, key) for key, e in stream_events()] + [(e.op, e.partition_key) for e in read_lake()]
    row_1 = [(op, key) for op, key in keyed if key.endswith(("/1/101", "/101/1"))]
    assert sorted(row_1) == [("r", "public.pair/1/101"), ("u", "public.pair/1/101")]


def test_snapshot_reads_leave_out_generated_columns_as_the_stream_does(source_dsn, capture_factory):
    # pgoutput (PostgreSQL 15-17) sends no generated column; a read carrying one would give the
    # table two column sets in the lake.
    execute(source_dsn,
            "CREATE TABLE priced (id integer PRIMARY KEY, net numeric, "
            "gross numeric GENERATED ALWAYS AS (net * 1.2) STORED)",
            "INSERT INTO priced (id, net) VALUES (1, 10)")
    service = capture_factory(source_dsn, tables=("priced",))
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(source_dsn, "INSERT INTO priced (id, net) VALUES (2, 20)")
    wait_for(slot_caught_up(source_dsn, service.config.slot), what="capture to catch up")
    (read,) = read_lake()
    (insert,) = [e for _, e in stream_events() if e.op == OP_INSERT]
    assert [c.name for c in read.columns] == [c.name for c in insert.columns] == ["id", "net"]
    assert read.after == {"id": "1", "net": "10"}

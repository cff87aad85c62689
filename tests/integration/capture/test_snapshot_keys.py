"""Snapshot reads (in the lake) and streamed changes of one row share its partition key, so its shard,
and the same columns."""

from __future__ import annotations

from typing import Any

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


def captured(source_dsn: str, capture_factory: Any, table: str, setup: tuple[str, ...],
             change: str) -> tuple[list[tuple[str, ChangeEvent]], list[ChangeEvent]]:
    """Run ``setup``, capture ``table`` until it streams, run ``change``: (the stream's events with
    their partition keys, the lake's snapshot reads)."""
    execute(source_dsn, *setup)
    service = capture_factory(source_dsn, tables=(table,))
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(source_dsn, change)
    wait_for(slot_caught_up(source_dsn, service.config.slot), what="capture to catch up")
    return stream_events(), read_lake()


def test_composite_key_ordered_unlike_the_columns_gives_one_partition_key(source_dsn, capture_factory):
    streamed, reads = captured(source_dsn, capture_factory, "pair", (
        "CREATE TABLE pair (a integer, b integer, v text, PRIMARY KEY (b, a))",
        "INSERT INTO pair SELECT g, g + 100, 'x' FROM generate_series(1, 3) g"),
        "UPDATE pair SET v = 'y' WHERE a = 1")
    keyed = [(e.op, key) for key, e in streamed] + [(e.op, e.partition_key) for e in reads]
    row_1 = [(op, key) for op, key in keyed if key.endswith(("/1/101", "/101/1"))]
    assert sorted(row_1) == [("r", "public.pair/1/101"), ("u", "public.pair/1/101")]


def test_snapshot_reads_leave_out_generated_columns_as_the_stream_does(source_dsn, capture_factory):
    # pgoutput (PostgreSQL 15-17) sends no generated column; a read carrying one would give the
    # table two column sets in the lake.
    streamed, reads = captured(source_dsn, capture_factory, "priced", (
        "CREATE TABLE priced (id integer PRIMARY KEY, net numeric, "
        "gross numeric GENERATED ALWAYS AS (net * 1.2) STORED)",
        "INSERT INTO priced (id, net) VALUES (1, 10)"),
        "INSERT INTO priced (id, net) VALUES (2, 20)")
    (read,) = reads
    (insert,) = [e for _, e in streamed if e.op == OP_INSERT]
    assert [c.name for c in read.columns] == [c.name for c in insert.columns] == ["id", "net"]
    assert read.after == {"id": "1", "net": "10"}

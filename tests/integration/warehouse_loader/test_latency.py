"""The latency waterfall end to end: change events through the emulator's Kinesis, the stream
processor's handler, the loader, into ``pipeline_latency``, ``totes-cdc status`` and the metrics."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import psycopg2
import pyarrow.parquet as pq
import pytest

from local_aws.events import kinesis_event
from stream_processors import handler as stream_handler
from tests.events import ARN, Context, aggregated, change, sales_order_values
from totes_cdc.settings import settings
from totes_cdc.stages import METADATA_KEY, STAGES
from totes_ops import status
from warehouse_loader.config import LoaderConfig
from warehouse_loader.handler import Loader
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration


def stream_through_kinesis(events: list[Any]) -> None:
    """Put the events as capture does, read each shard as the event source mapping does, and run
    the stream processor's handler on each shard's batch (real Kinesis arrival times)."""
    kinesis = boto3.client("kinesis")
    name = settings()["stream"]["name"]
    for key, data in aggregated(events, per_record=4, read_at=time.time()):
        kinesis.put_record(StreamName=name, PartitionKey=key, Data=data)
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator)["Records"]
        if records:
            response = stream_handler.handler(
                kinesis_event(records, shard["ShardId"], ARN, settings()["region"]), Context())
            assert response == {"batchItemFailures": []}


def test_each_loaded_file_has_its_waterfall_row_metrics_and_status_shows_each_stage(
        aws: Any, warehouse_dsn: str, tmp_path: Path) -> None:
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    conn.close()
    stream_handler._s3.cache_clear()
    now = dt.datetime.now(dt.UTC)
    # Changes committed over the last 200 ms, and a snapshot row read an hour ago; none before
    # today's midnight (UTC), so that they share one date partition and the snapshot row a file
    # with streamed rows, whenever the test runs.
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    events = [change("sales_order", sales_order_values(i + 1), 1000 + i, 1,
                     commit_ts=max(now - dt.timedelta(milliseconds=200 - 10 * i), midnight))
              for i in range(20)]
    events.append(change("sales_order", sales_order_values(99), 900, 1, op="r",
                         commit_ts=max(now - dt.timedelta(hours=1), midnight)))
    stream_through_kinesis(events)

    s3 = boto3.client("s3")
    bucket = settings()["buckets"]["processed"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    published: list[tuple[str, str, float]] = []
    loader = Loader(LoaderConfig.from_settings(lambda: warehouse_dsn),
                    lambda *metric: published.append(metric), s3)
    for key in keys:
        loader.load(bucket, key)
    loader.load(bucket, keys[0])  # applied again: its first row stays, nothing is published again
    loader.close()

    conn = psycopg2.connect(warehouse_dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT file_key, events, streamed_events, capture_read, kinesis_accepted,"
                    " processor_read, file_written, loaded_at, commit_to_capture_p50_ms,"
                    " commit_to_capture_p99_ms, capture_to_kinesis_ms, kinesis_to_processor_ms,"
                    " processor_to_file_ms, file_to_warehouse_ms,"
                    " end_to_end_p50_ms, end_to_end_p99_ms FROM pipeline_latency")
        rows = {row[0]: row[1:] for row in cur.fetchall()}
    conn.close()
    assert sorted(rows) == sorted(keys)
    assert sum(row[0] for row in rows.values()) == 21
    assert sum(row[1] for row in rows.values()) == 20  # the snapshot row has no stage from a commit
    for key, (_, _, captured, accepted, read, written, loaded, c50, c99, c2k, k2p, p2f, f2w, e50,
              e99) in rows.items():
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        table = pq.read_table(io.BytesIO(data))
        times = json.loads(table.schema.metadata[METADATA_KEY])
        assert [captured.timestamp(), accepted.timestamp(), read.timestamp(),
                written.timestamp()] == pytest.approx(
            [times["capture_read"], times["kinesis_accepted"], times["processor_read"],
             times["file_written"]], abs=1e-6)
        # Each hop starts where the previous one ended: capture, Kinesis, processor, file, warehouse.
        assert now < captured <= accepted <= read <= written <= loaded
        assert [c2k, k2p, p2f, f2w] == pytest.approx(
            [(accepted - captured).total_seconds() * 1000, (read - accepted).total_seconds() * 1000,
             (written - read).total_seconds() * 1000, (loaded - written).total_seconds() * 1000],
            abs=0.01)
        # The stages from the commit: percentiles over the file's streamed rows.
        commits = np.array([ts.timestamp() for ts, op in zip(table["_commit_ts"].to_pylist(),
                                                             table["_op"].to_pylist(), strict=True)
                            if op != "r"])
        assert [c50, c99] == pytest.approx(
            list(np.percentile(captured.timestamp() - commits, [50, 99]) * 1000), abs=0.01)
        assert [e50, e99] == pytest.approx(
            list(np.percentile(loaded.timestamp() - commits, [50, 99]) * 1000), abs=0.01)
        assert 0 < c50 <= c99 < e99

    stage_metrics = [(name, unit) for name, unit, _ in published if name != "EndToEndLatencyMs"
                     and unit == "Milliseconds"]
    assert sorted(stage_metrics) == sorted(
        (stage.metric, "Milliseconds") for stage in STAGES if stage.metric for _ in keys)

    reading = status.collect(None, warehouse_dsn, tmp_path)
    assert reading.stages_ms is not None
    assert set(reading.stages_ms) == {stage.name for stage in STAGES}
    assert reading.stages_ms["end_to_end"]["p99"] == pytest.approx(
        float(np.percentile([row[14] for row in rows.values()], 99)))
    assert json.loads(json.dumps(reading.as_dict()))["stages_ms"] == reading.stages_ms  # --json
    text = status.render(reading)
    for stage in STAGES:
        line = next(line for line in text.splitlines() if stage.label in line)
        assert line.startswith("latency") and " ms, p99 " in line, line

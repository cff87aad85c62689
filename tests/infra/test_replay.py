"""`totes-cdc replay` against the emulator: what the failure destinations hold is processed again."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import boto3
import pytest

from local_aws.events import on_failure_record, stream_arn
from stream_processors import handler as stream_handler
from tests.events import aggregated, sales_orders
from totes_cdc.settings import settings
from totes_ops.cli import main

pytestmark = pytest.mark.integration


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def queue(sqs: Any, name: str) -> str:
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


def depth(sqs: Any, name: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue(sqs, name), AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_replay_processes_the_given_up_stream_range_and_sends_dlq_files_back(
        aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = settings()
    kinesis, sqs, s3 = boto3.client("kinesis"), boto3.client("sqs"), boto3.client("s3")
    stream = cfg["stream"]["name"]
    stream_handler._s3.cache_clear()

    # A batch the mapping gave up on (its retries ran out while S3 was failing): on the stream,
    # and its range in the on-failure queue, as the mapping sends it.
    put = [kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
           for key, data in aggregated(sales_orders(6), per_record=2)]
    shard = put[0]["ShardId"]
    records = kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"]
    given_up = records[:2]  # the range of the first two records only
    message = on_failure_record(given_up, shard, stream_arn(stream, cfg["region"]),
                                function_arn="arn:aws:lambda:eu-west-2:123456789012:function:sp",
                                condition="RetryAttemptsExhausted", invoke_count=4,
                                function_error="Unhandled", now=dt.datetime.now(dt.UTC))
    sqs.send_message(QueueUrl=queue(sqs, cfg["queues"]["stream_failures"]), MessageBody=json.dumps(message))
    # A range trimmed from the stream stays in the queue.
    expired = json.loads(json.dumps(message))
    expired["KinesisBatchInfo"]["shardId"] = "shardId-000000000099"
    sqs.send_message(QueueUrl=queue(sqs, cfg["queues"]["stream_failures"]), MessageBody=json.dumps(expired))

    # A file notification that reached the loader's DLQ during an outage.
    notification = json.dumps({"Records": [{"s3": {"bucket": {"name": cfg["buckets"]["processed"]},
                                                   "object": {"key": "processed/x.parquet"}}}]})
    sqs.send_message(QueueUrl=queue(sqs, cfg["queues"]["processed_files_dlq"]), MessageBody=notification)
    assert keys(s3, cfg["buckets"]["processed"]) == []

    assert main(["replay"]) == 1  # the trimmed range is reported
    out = capsys.readouterr().out
    assert "replay: 1 stream ranges processed again, 1 files sent back to the loader; " \
           "1 ranges no longer in the stream" in out

    processed = keys(s3, cfg["buckets"]["processed"])
    first, last = given_up[0]["SequenceNumber"], given_up[-1]["SequenceNumber"]
    assert processed and all(key.endswith(f"{shard}-{first}-{last}.parquet") for key in processed)
    assert keys(s3, cfg["buckets"]["raw"])
    assert depth(sqs, cfg["queues"]["processed_files_dlq"]) == 0
    # The loader's queue also holds the bucket's notifications of the files the replay wrote.
    moved = sqs.receive_message(QueueUrl=queue(sqs, cfg["queues"]["processed_files"]),
                                MaxNumberOfMessages=10)["Messages"]
    assert notification in [m["Body"] for m in moved]
    remaining = sqs.receive_message(QueueUrl=queue(sqs, cfg["queues"]["stream_failures"]))["Messages"]
    assert [json.loads(m["Body"])["KinesisBatchInfo"]["shardId"] for m in remaining] == [
        "shardId-000000000099"]

    # Replayed again: the same keys, nothing doubled.
    sqs.send_message(QueueUrl=queue(sqs, cfg["queues"]["stream_failures"]), MessageBody=json.dumps(message))
    main(["replay", "--only", "stream"])
    assert keys(s3, cfg["buckets"]["processed"]) == processed

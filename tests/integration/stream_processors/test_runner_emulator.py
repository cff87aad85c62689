"""`totes-cdc process` as its own process against the emulator's stream: kill -9, restart, nothing skipped."""

import dataclasses
import io
import json
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from tests.events import aggregated, change, sales_order_values
from totes_cdc.settings import settings

pytestmark = pytest.mark.integration


def put(kinesis, events):
    records = aggregated(events, per_record=25)
    kinesis.put_records(StreamName=settings()["stream"]["name"],
                        Records=[{"PartitionKey": key, "Data": data} for key, data in records])


def identities(s3):
    bucket = settings()["buckets"]["processed"]
    seen = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
            seen += zip(table.column("_lsn").to_pylist(), table.column("_seq").to_pylist(), strict=True)
    return seen


def wait_for(s3, expected, process, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the runner exited"
        if set(identities(s3)) >= expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"missing after {timeout}s: {sorted(expected - set(identities(s3)))[:10]}")


def start(aws_env, state_dir, log):
    return subprocess.Popen([sys.executable, "-m", "totes_ops", "process", "--state-dir", str(state_dir)],
                            env=aws_env, stdout=log, stderr=subprocess.STDOUT)


def batch(lsn, count, first_id):
    # One transaction per row, as capture publishes them: keys spread over both shards.
    return [change("sales_order", sales_order_values(first_id + i), lsn + i, 1) for i in range(count)]


def test_runner_killed_and_restarted_skips_no_record(aws, aws_env, tmp_path):
    kinesis, s3 = aws.client("kinesis"), aws.client("s3")
    first, second = batch(10_000, 200, 1), batch(20_000, 200, 1)
    put(kinesis, first)
    with open(tmp_path / "process.log", "ab") as log:
        process = start(aws_env, tmp_path / "state", log)
        try:
            wait_for(s3, {(e.lsn, e.seq) for e in first}, process)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            put(kinesis, second)
            process = start(aws_env, tmp_path / "state", log)
            wait_for(s3, {(e.lsn, e.seq) for e in first + second}, process)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stream = settings()["stream"]["name"]
    checkpoints = sorted(p.name for p in (tmp_path / "state" / "checkpoints" / stream).iterdir())
    assert checkpoints == ["shardId-000000000000.json", "shardId-000000000001.json"]
    status = json.loads((tmp_path / "state" / "status" / "process.json").read_text())
    assert status["counts"]["sent_to_on_failure_destination"] == 0
    metrics = {m["MetricName"] for m in aws.client("cloudwatch").list_metrics(
        Namespace=settings()["metrics_namespace"])["Metrics"]}
    assert {"EventsProcessed", "RecordsDeadLettered", "IteratorAgeMilliseconds"} <= metrics


def test_a_batch_failing_every_retry_reaches_the_on_failure_queue(aws, tmp_path):
    from local_aws.kinesis_runner import Runner
    from stream_processors.config import MappingConfig

    kinesis, sqs = aws.client("kinesis"), aws.client("sqs")
    stream = settings()["stream"]["name"]
    for i in range(3):
        kinesis.put_record(StreamName=stream, Data=f"r{i}".encode(), PartitionKey="same-key")
    calls = []

    def handler(event, context):
        calls.append([r["kinesis"]["sequenceNumber"] for r in event["Records"]])
        if any(r["kinesis"]["data"] == "cjE=" for r in event["Records"]):  # b"r1"
            raise RuntimeError("S3 unavailable")
        return {"batchItemFailures": []}

    config = dataclasses.replace(MappingConfig.from_settings(), batching_window_seconds=0,
                                 maximum_retry_attempts=0)
    runner = Runner(config, tmp_path, handler, kinesis=kinesis, sqs=sqs,
                    cloudwatch=aws.client("cloudwatch"), namespace=settings()["metrics_namespace"])
    stop = threading.Event()
    for _ in range(5):
        runner.cycle(stop)
    seqs = calls[0]
    assert calls == [seqs, seqs[:1], seqs[1:], seqs[1:2], seqs[2:]]
    url = sqs.get_queue_url(QueueName=settings()["queues"]["stream_failures"])["QueueUrl"]
    [message] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    info = json.loads(message["Body"])["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (seqs[1], seqs[1])
    assert info["batchSize"] == 1
    assert info["streamArn"].endswith(f":stream/{stream}")

"""The AWS adapters, against in-process moto."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from capture.errors import CaptureError
from capture.kinesis import KinesisSink, S3DeadLetter
from capture.metrics import MetricsPublisher
from capture.producer import Record
from totes_cdc.lakefiles import StoreError

REGION = "eu-west-2"


@mock_aws
def test_kinesis_sink_lists_open_shards_and_reports_per_record_results():
    client = boto3.client("kinesis", region_name=REGION)
    client.create_stream(StreamName="s", ShardCount=2)
    sink = KinesisSink("s", client)
    shards = sink.shards()
    assert len(shards) == 2 and shards[0].start_hash == 0
    assert sink.put_records([Record("k", str(shards[1].start_hash), b"data", 1)]) == [None]
    with pytest.raises(CaptureError, match="cannot list the shards"):
        KinesisSink("missing", client).shards()
    with pytest.raises(CaptureError, match="PutRecords"):
        KinesisSink("missing", client).put_records([Record("k", "0", b"d", 1)])


def test_kinesis_sink_reports_a_failed_call_as_every_record_failing():
    class Down:
        def put_records(self, **_):
            raise ConnectionResetError("reset")

    assert KinesisSink("s", Down()).put_records([Record("k", "0", b"d", 1)] * 2) == [
        "ConnectionResetError", "ConnectionResetError"]


@mock_aws
def test_dead_letter_keeps_the_event_and_the_reason():
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="dead-letter", CreateBucketConfiguration={"LocationConstraint": REGION})
    S3DeadLetter("dead-letter", "records/", s3)("public.t/é", b"event", "too big: é")
    [obj] = s3.list_objects_v2(Bucket="dead-letter", Prefix="records/capture/")["Contents"]
    head = s3.head_object(Bucket="dead-letter", Key=obj["Key"])
    assert head["Metadata"]["reason"] == "too big: \\xe9"
    assert s3.get_object(Bucket="dead-letter", Key=obj["Key"])["Body"].read() == b"event"


@mock_aws
def test_a_dead_letter_that_cannot_be_written_is_a_store_error_so_the_event_is_read_again():
    s3 = boto3.client("s3", region_name=REGION)  # no bucket: S3 refuses the put
    with pytest.raises(StoreError, match=r"cannot write the dead-lettered event to s3://dead-letter/"):
        S3DeadLetter("dead-letter", "records/", s3)("public.t/1", b"event", "too big")


@mock_aws
def test_metrics_publisher_writes_status_and_survives_cloudwatch_failures(tmp_path, caplog):
    publisher = MetricsPublisher(tmp_path / "status" / "capture.json",
                                 boto3.client("cloudwatch", region_name=REGION))
    publisher.publish([("SlotLagBytes", 1.0, "Bytes")], {"phase": "streaming"})
    assert '"phase": "streaming"' in publisher.status_path.read_text()

    class Failing:
        def put_metric_data(self, **_):
            import botocore.exceptions
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")

    MetricsPublisher(tmp_path / "s.json", Failing()).publish([], {})
    assert "could not publish capture metrics" in caplog.text

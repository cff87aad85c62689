"""The fault-injecting proxy against the real emulator: pass-through, and failures as AWS shows them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.chaos.proxy import THROUGHPUT_EXCEEDED, FaultProxy, is_put_object
from totes_cdc.settings import settings
from totes_ops.stack.emulator import Emulator, emulator_client

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
def proxy(aws: Emulator) -> Iterator[FaultProxy]:
    proxy = FaultProxy(aws.endpoint, seed=3)
    proxy.start()
    yield proxy
    proxy.stop()


def client(proxy: FaultProxy, service: str) -> Any:
    return emulator_client(proxy.endpoint, service, config=NO_RETRIES)


def stored_records(aws: Emulator) -> list[bytes]:
    """Every record on the stream, read from the emulator directly."""
    kinesis, stream = aws.client("kinesis"), settings()["stream"]["name"]
    data = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        data += [r["Data"] for r in kinesis.get_records(ShardIterator=iterator, Limit=10000)["Records"]]
    return data


def put(proxy: FaultProxy, n: int) -> dict[str, Any]:
    records = [{"Data": f"event {i}".encode(), "PartitionKey": f"key-{i}"} for i in range(n)]
    response: dict[str, Any] = client(proxy, "kinesis").put_records(
        StreamName=settings()["stream"]["name"], Records=records)
    return response


def test_without_faults_everything_passes_through(aws: Emulator, proxy: FaultProxy) -> None:
    assert put(proxy, 20)["FailedRecordCount"] == 0
    assert sorted(stored_records(aws)) == sorted(f"event {i}".encode() for i in range(20))
    s3 = client(proxy, "s3")
    bucket = settings()["buckets"]["raw"]
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"x" * 100_000)
    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"x" * 100_000
    assert s3.head_object(Bucket=bucket, Key="a/b.txt")["ContentLength"] == 100_000
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a/b.txt"]
    assert proxy.counts()["s3_puts"] == 1


def test_partial_failure_stores_only_the_records_reported_stored(aws: Emulator, proxy: FaultProxy) -> None:
    proxy.set_faults(put_records_partial=1.0, failed_record_share=0.4)
    response = put(proxy, 50)
    failed = [i for i, r in enumerate(response["Records"]) if "ErrorCode" in r]
    assert 0 < len(failed) < 50
    assert response["FailedRecordCount"] == len(failed)
    assert {response["Records"][i]["ErrorCode"] for i in failed} == {THROUGHPUT_EXCEEDED}
    assert all("SequenceNumber" in r and "ShardId" in r
               for i, r in enumerate(response["Records"]) if i not in failed)
    assert sorted(stored_records(aws)) == sorted(
        f"event {i}".encode() for i in range(50) if i not in failed)
    assert proxy.counts()["records_failed"] == len(failed)


def test_throttled_call_stores_nothing(aws: Emulator, proxy: FaultProxy) -> None:
    proxy.set_faults(put_records_throttled=1.0)
    with pytest.raises(ClientError) as raised:
        put(proxy, 5)
    assert raised.value.response["Error"]["Code"] == THROUGHPUT_EXCEEDED
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert stored_records(aws) == []
    proxy.set_faults()
    assert put(proxy, 5)["FailedRecordCount"] == 0


def test_s3_put_failure_is_a_slow_down_and_stores_nothing(aws: Emulator, proxy: FaultProxy) -> None:
    proxy.set_faults(s3_put_failed=1.0)
    s3 = client(proxy, "s3")
    bucket = settings()["buckets"]["processed"]
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="processed/x.parquet", Body=b"data")
    assert raised.value.response["Error"]["Code"] == "SlowDown"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "Contents" not in aws.client("s3").list_objects_v2(Bucket=bucket)
    assert (proxy.counts()["s3_puts"], proxy.counts()["s3_puts_failed"]) == (1, 1)


@pytest.mark.parametrize(("method", "path", "headers", "expected"), [
    ("PUT", "/bucket/key/part.parquet", {}, True),
    ("PUT", "/bucket/key?x-id=PutObject", {}, True),
    ("PUT", "/bucket", {}, False),
    ("PUT", "/bucket?notification", {}, False),
    ("PUT", "/bucket/key?partNumber=1&uploadId=u", {}, False),
    ("PUT", "/bucket/key", {"x-amz-copy-source": "other/key"}, False),
    ("GET", "/bucket/key", {}, False),
])
def test_put_object_is_told_from_other_puts(method: str, path: str, headers: dict[str, str],
                                            expected: bool) -> None:
    assert is_put_object(method, path, headers) is expected


def test_a_stall_holds_put_records_until_released(aws: Emulator, proxy: FaultProxy) -> None:
    proxy.stall()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (put(proxy, 3), done.set()))
    thread.start()
    assert not done.wait(1.5)
    assert stored_records(aws) == [] and proxy.counts()["put_records_stalled"] == 1
    proxy.release()
    assert done.wait(10)
    thread.join()
    assert len(stored_records(aws)) == 3

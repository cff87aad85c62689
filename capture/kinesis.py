"""The AWS side of capture: the Kinesis sink and the dead-letter writer (S3).

boto3 finds its endpoint and credentials in the environment (AWS_ENDPOINT_URL points it at the
local emulator); nothing here knows which one it talks to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import boto3
import botocore.exceptions

from capture.errors import CaptureError
from capture.producer import Record, Shard
from totes_cdc.lakefiles import StoreError

log = logging.getLogger(__name__)

# Errors of a whole PutRecords call that retrying cannot fix.
_TERMINAL_CODES = {"ResourceNotFoundException", "AccessDeniedException", "ValidationException",
                   "InvalidArgumentException", "KMSAccessDeniedException", "UnrecognizedClientException"}


class KinesisSink:
    """PutRecords into one stream; per-record errors (throttling) are reported, not raised."""

    def __init__(self, stream: str, client: Any = None) -> None:
        self.stream = stream
        self._client = client or boto3.client("kinesis")

    def shards(self) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream}
        try:
            while True:
                page = self._client.list_shards(**kwargs)
                shards += [Shard(s["ShardId"], int(s["HashKeyRange"]["StartingHashKey"]),
                                 int(s["HashKeyRange"]["EndingHashKey"]))
                           for s in page["Shards"]
                           if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
                if not page.get("NextToken"):
                    return shards
                kwargs = {"NextToken": page["NextToken"]}
        except botocore.exceptions.ClientError as exc:
            raise CaptureError(f"cannot list the shards of Kinesis stream {self.stream!r}: {exc}") from None

    def put_records(self, records: Sequence[Record]) -> list[str | None]:
        try:
            response = self._client.put_records(StreamName=self.stream, Records=[
                {"Data": r.data, "PartitionKey": r.partition_key, "ExplicitHashKey": r.explicit_hash_key}
                for r in records])
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            if code in _TERMINAL_CODES:
                raise CaptureError(f"PutRecords to Kinesis stream {self.stream!r} failed: {exc}") from None
            return [code] * len(records)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:  # connection errors, timeouts
            return [type(exc).__name__] * len(records)
        return [r.get("ErrorCode") for r in response["Records"]]


def _ascii(text: str) -> str:
    """S3 metadata values must be ASCII."""
    return text.encode("ascii", "backslashreplace").decode()


class S3DeadLetter:
    """Keeps events that cannot be sent under the dead-letter prefix, with the reason as metadata."""

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client or boto3.client("s3")

    def __call__(self, partition_key: str, data: bytes, reason: str) -> None:
        digest = hashlib.sha256(data).hexdigest()[:16]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")
        key = f"{self.prefix}capture/{stamp}/{digest}.avro"
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata={
                "reason": _ascii(reason[:1000]), "partition-key": _ascii(partition_key[:256])})
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            # Neither sent nor kept: the session ends unacknowledged and reads the event again.
            raise StoreError(f"cannot write the dead-lettered event to s3://{self.bucket}/{key}: "
                             f"{exc}") from None
        log.error("event with partition key %r written to s3://%s/%s: %s",
                  partition_key, self.bucket, key, reason)

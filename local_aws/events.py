"""The JSON documents the Lambda service exchanges with the function, as AWS shapes them. No I/O.

- the Kinesis event a function receives (``Records[].kinesis`` ...), built from GetRecords output;
- the on-failure record an event source mapping sends to its destination when it gives up a batch.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

ACCOUNT = "123456789012"  # the account id of the local stack's ARNs (the emulator's default)
INVOKE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/totes-cdc-stream-processor"


def stream_arn(stream: str, region: str) -> str:
    return f"arn:aws:kinesis:{region}:{ACCOUNT}:stream/{stream}"


def kinesis_event(records: Sequence[Mapping[str, Any]], shard_id: str, source_arn: str,
                  region: str) -> dict[str, Any]:
    """The event Lambda delivers for GetRecords ``records`` of one shard."""
    return {"Records": [{
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": r["PartitionKey"],
            "sequenceNumber": r["SequenceNumber"],
            "data": base64.b64encode(r["Data"]).decode(),
            "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{r['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": INVOKE_ROLE,
        "awsRegion": region,
        "eventSourceARN": source_arn,
    } for r in records]}


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def on_failure_record(records: Sequence[Mapping[str, Any]], shard_id: str, source_arn: str, *,
                      function_arn: str, condition: str, invoke_count: int,
                      function_error: str | None, now: dt.datetime) -> dict[str, Any]:
    """What the mapping sends to the on-failure destination for a batch it gives up.

    ``condition`` is RetryAttemptsExhausted or RecordAgeExceeded. The records themselves are not
    included (as in AWS): the shard and sequence range say where to read them again.
    """
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response["functionError"] = function_error
    return {
        "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": function_arn,
                           "condition": condition, "approximateInvokeCount": invoke_count},
        "responseContext": response,
        "version": "1.0",
        "timestamp": _iso(now),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": records[0]["SequenceNumber"],
            "endSequenceNumber": records[-1]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso(records[0]["ApproximateArrivalTimestamp"]),
            "approximateArrivalOfLastRecord": _iso(records[-1]["ApproximateArrivalTimestamp"]),
            "batchSize": len(records),
            "streamArn": source_arn,
        },
    }

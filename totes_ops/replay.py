"""``totes-cdc replay``: process again what the failure destinations hold, once the cause is fixed.

- Stream ranges: each message of ``queues.stream_failures`` (the stream mapping's on-failure
  destination) names a shard and a sequence range it gave up on. The range is read again from the
  stream, while it is still in retention, and handed to the stream processor's handler as the
  mapping would; the message is deleted once the handler has written the batch (its poison
  records go to the dead-letter bucket as usual). A range the stream no longer holds is left in the
  queue and reported.
- DLQ files: each message of ``queues.processed_files_dlq`` is sent back to
  ``queues.processed_files``, where the loader picks the file up again, then deleted from the DLQ.

Replaying is idempotent: the stream processor's files are keyed by shard and sequence range, and the
loader ignores rows it already holds.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

VISIBILITY_SECONDS = 300  # a message being replayed stays hidden this long


@dataclass
class Replayed:
    ranges: int = 0  # stream ranges processed again
    ranges_expired: int = 0  # ranges the stream no longer holds (left in the queue)
    files: int = 0  # DLQ messages moved back to the loader's queue


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="process again the stream ranges and files the failure destinations hold",
        description="Read the stream ranges named in the stream mapping's on-failure queue again "
                    "and run the stream processor on them; move the loader DLQ's messages back to "
                    "its queue. Exit 0 when nothing was left behind.")
    parser.add_argument("--only", choices=["stream", "files"],
                        help="replay only stream ranges, or only DLQ files")
    parser.set_defaults(func=run)


def _messages(sqs: Any, url: str) -> Iterator[dict[str, Any]]:
    """Every message of the queue, each received once (hidden while it is handled)."""
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    VisibilityTimeout=VISIBILITY_SECONDS).get("Messages", [])
        if not batch:
            return
        yield from batch


def read_range(kinesis: Any, stream: str, shard_id: str, start: str, end: str) -> list[dict[str, Any]]:
    """The records of ``shard_id`` from sequence number ``start`` to ``end``; [] once trimmed."""
    try:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=start)["ShardIterator"]
    except (kinesis.exceptions.InvalidArgumentException, kinesis.exceptions.ResourceNotFoundException):
        return []  # older than the stream's retention, or a closed shard that has expired
    records: list[dict[str, Any]] = []
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        for record in page["Records"]:
            if int(record["SequenceNumber"]) > int(end):
                break
            records.append(record)
        else:
            if page["Records"] or page.get("MillisBehindLatest", 0) > 0:
                iterator = page.get("NextShardIterator")
                continue
        break
    # Reading from a trimmed position starts at the oldest record kept: the range's start is gone.
    return records if records and records[0]["SequenceNumber"] == start else []


def replay_stream_ranges(sqs: Any, kinesis: Any, handle: Callable[[dict[str, Any]], Any],
                         result: Replayed) -> None:
    from local_aws.events import kinesis_event
    from totes_cdc.settings import settings

    cfg = settings()
    url = sqs.get_queue_url(QueueName=cfg["queues"]["stream_failures"])["QueueUrl"]
    left = []
    for message in _messages(sqs, url):
        info = json.loads(message["Body"])["KinesisBatchInfo"]
        stream = info["streamArn"].rsplit("/", 1)[-1]
        records = read_range(kinesis, stream, info["shardId"], info["startSequenceNumber"],
                             info["endSequenceNumber"])
        if not records:
            log.warning("shard %s %s..%s is no longer in the stream %s; left in %s", info["shardId"],
                        info["startSequenceNumber"], info["endSequenceNumber"], stream,
                        cfg["queues"]["stream_failures"])
            result.ranges_expired += 1
            left.append(message["ReceiptHandle"])
            continue
        handle(kinesis_event(records, info["shardId"], info["streamArn"], cfg["region"]))
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        result.ranges += 1
        log.info("replayed shard %s %s..%s (%d records)", info["shardId"], info["startSequenceNumber"],
                 info["endSequenceNumber"], len(records))
    for receipt in left:  # visible again at once, for whoever looks into them
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)


def replay_dead_letter_files(sqs: Any, result: Replayed) -> None:
    from totes_cdc.settings import settings

    queues = settings()["queues"]
    dlq = sqs.get_queue_url(QueueName=queues["processed_files_dlq"])["QueueUrl"]
    target = sqs.get_queue_url(QueueName=queues["processed_files"])["QueueUrl"]
    for message in _messages(sqs, dlq):
        sqs.send_message(QueueUrl=target, MessageBody=message["Body"])
        sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
        result.files += 1


def run(args: argparse.Namespace) -> int:
    import boto3

    from local_aws.kinesis_runner import LocalContext
    from stream_processors.config import MappingConfig
    from stream_processors.handler import handler

    sqs = boto3.client("sqs")
    result = Replayed()
    if args.only in (None, "stream"):
        config = MappingConfig.from_settings()
        replay_stream_ranges(sqs, boto3.client("kinesis"),
                             lambda event: handler(event, LocalContext(config.function_name, config.region)),
                             result)
    if args.only in (None, "files"):
        replay_dead_letter_files(sqs, result)
    print(f"replay: {result.ranges} stream ranges processed again, {result.files} files sent back to "
          f"the loader; {result.ranges_expired} ranges no longer in the stream")
    return 0 if result.ranges_expired == 0 else 1

"""The Lambda function of the stream processor (Kinesis event source mapping, partial batch response).

Per batch: parse every Kinesis record (de-aggregate, decode, type: the whole batch at once, see
columnar.py), then write the batch once: poison user records to the dead-letter bucket, events to
the raw and processed zones (one Avro and one Parquet file per table and commit date).

Poison records: each is written to the dead-letter bucket (raw bytes, error, shard, sequence
number) as soon as it is seen, and its Kinesis record is also reported as a batch item failure.
Every good event of the batch, including those in records after the poison one, is written in the
same invocation, so nothing waits on it. The mapping then retries from the poison record (the good
events after it are written again under the retried batch's keys: duplicates the loader ignores by
source position); after its retries it sends the batch's shard and sequence range to the on-failure
destination and moves on. So events newer than a poison record, later versions of its own row
included, land before its retries end; the loader applies each row's versions by source position
(an older one never overwrites a newer one), so the order files land in does not change the
warehouse. Infrastructure errors (S3 failing) raise: the whole batch is retried by the mapping.
"""

from __future__ import annotations

import base64
import os
import time
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from totes_cdc import kpl, metric_names

from .columnar import parse_batch
from .config import ProcessorConfig
from .errors import PoisonRecordError
from .files import BatchId
from .store import ObjectStore, write_batch

SERVICE = "stream-processor"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
# The service dimension is the one the alarms watch (settings metrics, totes_cdc.metric_names).
metrics = Metrics(namespace=metric_names.namespace(), service=metric_names.service("stream_processor"))


@cache
def _s3(endpoint: str | None) -> Any:
    """One client per endpoint (boto3 reads AWS_ENDPOINT_URL itself), reused across invocations."""
    return boto3.client("s3")


def batch_id(records: list[dict[str, Any]], read: float, data: list[bytes]) -> BatchId:
    """The batch, with when capture read its last event (from the records' ``data``), when Kinesis
    accepted its last record and when it was ``read``."""
    shard_id = records[0]["eventID"].split(":", 1)[0]
    arrivals = [r["kinesis"]["approximateArrivalTimestamp"] for r in records
                if "approximateArrivalTimestamp" in r["kinesis"]]
    captured = [t for d in data if (t := kpl.capture_read(d)) is not None]
    return BatchId(shard_id, records[0]["kinesis"]["sequenceNumber"],
                   records[-1]["kinesis"]["sequenceNumber"], max(arrivals, default=None), read,
                   max(captured, default=None))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    read = time.time()
    records = event.get("Records") or []
    if not records:
        metrics.add_metric(name="EventsProcessed", unit=MetricUnit.Count, value=0)
        return {"batchItemFailures": []}
    config = ProcessorConfig.from_settings()
    data = [base64.b64decode(r["kinesis"]["data"]) for r in records]
    batch = batch_id(records, read, data)
    logger.set_correlation_id(batch.name)
    parsed = parse_batch([(d, r["kinesis"]["partitionKey"], r["kinesis"]["sequenceNumber"])
                          for d, r in zip(data, records, strict=True)])
    errors: dict[str, list[str]] = {}
    for poison in parsed.poison:
        errors.setdefault(poison.sequence_number, []).append(poison.error)

    def report(record: KinesisStreamRecord) -> None:
        """Fail the Kinesis records that held poison (the partial batch response)."""
        if record.kinesis.sequence_number in errors:
            raise PoisonRecordError("; ".join(errors[record.kinesis.sequence_number]))

    processor = BatchProcessor(event_type=EventType.KinesisDataStreams,
                               raise_on_entire_batch_failure=False)
    response = process_partial_response(event=event, record_handler=report, processor=processor,
                                        context=context)
    result = write_batch(ObjectStore(_s3(os.environ.get("AWS_ENDPOINT_URL"))), config, batch, parsed,
                         records[0].get("eventSourceARN", ""))
    for poison, key in zip(parsed.poison, result.dead_letter_keys, strict=True):
        logger.error("poison record dead-lettered", extra={
            "shard_id": batch.shard_id, "sequence_number": poison.sequence_number,
            "sub_sequence_number": poison.sub_sequence, "error": poison.error,
            "dead_letter_object": f"s3://{config.dead_letter_bucket}/{key}"})
    metrics.add_metric(name="EventsProcessed", unit=MetricUnit.Count, value=result.events)
    metrics.add_metric(name="RecordsDeadLettered", unit=MetricUnit.Count,
                       value=len(result.dead_letter_keys))
    logger.info("batch written", extra={
        "records": len(records), "events": result.events,
        "raw_objects": len(result.raw_keys), "processed_objects": len(result.processed_keys),
        "dead_lettered": len(result.dead_letter_keys)})
    return response

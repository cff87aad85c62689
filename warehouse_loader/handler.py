"""The loader Lambda: SQS messages carrying S3 ObjectCreated notifications of processed files.

Each message is processed on its own (partial batch response): a file that breaks the contract is
dead-lettered and its message succeeds, so it never blocks the queue (when the warehouse rejects
some of a stream file's values, the file's other rows are applied and only the rejected rows are
dead-lettered, as a Parquet file of the same schema); a failure a retry may fix
fails the message, and SQS redelivers it (after ``max_receive_count`` receives it goes to the
queue's DLQ). The same :class:`Loader` runs under ``totes-cdc load`` locally.

The function consumes two queues. S3 announces every processed file on ``queues.processed_files``;
a snapshot read's file or marker (seconds to minutes of bulk load each) is passed on from there to
``queues.snapshot_files`` (``$TOTES_CDC_SNAPSHOT_QUEUE_URL``), whose own mapping and concurrency
(``snapshot_loader_mapping``) apply it, so the stream's files never wait behind a bulk load for a
worker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

import boto3
import botocore.exceptions
import psycopg2
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from totes_cdc import metric_names
from totes_cdc.db import connect, dsn_from_secret
from totes_cdc.errors import ConfigError, DatabaseUnavailable, first_line
from totes_cdc.snapshot_marker import is_snapshot_key
from warehouse_loader.apply import FileResult, apply_file, apply_separating
from warehouse_loader.config import LoaderConfig
from warehouse_loader.errors import BadFileError, RejectedValuesError, RetryableLoadError
from warehouse_loader.migrate import pending

logger = Logger(service="warehouse_loader")
tracer = Tracer(service="warehouse_loader")
# The service dimension is the one the alarms watch (settings metrics, totes_cdc.metric_names).
metrics = Metrics(namespace=metric_names.namespace(), service=metric_names.service("loader"))

# (metric name, CloudWatch unit, value): where a metric goes is the runtime's business.
Publish = Callable[[str, str, float], None]

DSN_ENV = "TOTES_CDC_WAREHOUSE_DSN"
# The name of an environment variable, not a secret.
SECRET_ENV = "TOTES_CDC_WAREHOUSE_SECRET"  # noqa: S105  # nosec B105
SECRET_MAX_AGE_SECONDS = 300
SNAPSHOT_QUEUE_ENV = "TOTES_CDC_SNAPSHOT_QUEUE_URL"
AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)


def warehouse_dsn() -> str:
    """The warehouse DSN: ``$TOTES_CDC_WAREHOUSE_DSN`` locally; in AWS, built from the Secrets
    Manager secret named by ``$TOTES_CDC_WAREHOUSE_SECRET`` (JSON: host, port, dbname, username,
    password, sslmode)."""
    if dsn := os.environ.get(DSN_ENV):
        return dsn
    name = os.environ.get(SECRET_ENV)
    if not name:
        raise ConfigError(f"no warehouse configured: set {DSN_ENV} or {SECRET_ENV}")
    secret = parameters.get_secret(name, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
    return dsn_from_secret(secret, name)


class Loader:
    """Applies the files that S3 notifications name; keeps one warehouse connection across calls."""

    def __init__(self, config: LoaderConfig, publish: Publish, s3: Any | None = None,
                 sqs: Any | None = None) -> None:
        self.config = config
        self._publish = publish
        self._s3 = s3 or boto3.client("s3")
        self._sqs = sqs
        self._conn: Any = None

    def handle_batch(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """An SQS event in, the partial batch response (``batchItemFailures``) out."""
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return dict(process_partial_response(event, self.handle_record, processor, context))

    def handle_record(self, record: SQSRecord) -> None:
        try:
            body = json.loads(record.body)
        except json.JSONDecodeError:
            body = None
        if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
            return
        if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
            # kept like a bad file (the queue's name in place of a bucket), so the queue moves on
            queue = str(record.raw_event.get("eventSourceARN") or "sqs").rsplit(":", 1)[-1]
            self.dead_letter(queue, f"messages/{record.message_id}", record.body.encode(),
                             "the message is not an S3 notification")
            return
        try:
            objects = [(r.s3.bucket.name, unquote_plus(r.s3.get_object.key)) for r in S3Event(body).records]
            if self._passes_on(record, objects):
                self._pass_on(record, objects)
                return
            for bucket, key in objects:
                self.load(bucket, key)
        except Exception:
            logger.exception("message failed; SQS will redeliver it",
                             extra={"message_id": record.message_id})
            raise

    def _passes_on(self, record: SQSRecord, objects: list[tuple[str, str]]) -> bool:
        """Whether the message names snapshot files only and came from a queue other than theirs."""
        url = self.config.snapshot_queue_url
        return (url is not None and bool(objects) and all(is_snapshot_key(key) for _, key in objects)
                and record.event_source_arn.rsplit(":", 1)[-1] != url.rsplit("/", 1)[-1])

    def _pass_on(self, record: SQSRecord, objects: list[tuple[str, str]]) -> None:
        url = self.config.snapshot_queue_url
        if self._sqs is None:
            self._sqs = boto3.client("sqs")
        try:
            self._sqs.send_message(QueueUrl=url, MessageBody=record.body)
        except AWS_ERRORS as exc:
            raise RetryableLoadError(f"cannot pass {objects[0][1]} on to {url}: {exc}") from exc
        logger.info("snapshot file passed on to its queue",
                    extra={"keys": [key for _, key in objects], "queue": url})

    def load(self, bucket: str, key: str) -> None:
        """Apply one object; dead-letter it when it is bad; RetryableLoadError when a retry may help."""
        data: bytes | None = None
        try:
            data = self._get(bucket, key)
            result = self._apply(bucket, key, data)
        except BadFileError as exc:
            self.dead_letter(bucket, key, data, exc.reason)
            return
        except RetryableLoadError:
            self._close()
            raise
        if result is None:
            return
        self._publish("FilesLoaded", "Count", 1)
        self._publish("FactRowsAppended", "Count", result.fact_rows_appended)
        if result.latency_ms is not None:
            self._publish("EndToEndLatencyMs", "Milliseconds", result.latency_ms)
        for metric, ms in result.stages:
            self._publish(metric, "Milliseconds", ms)
        logger.info("file loaded", extra={"key": key, "table": result.table, "rows": result.rows,
                                          "fact_rows_appended": result.fact_rows_appended,
                                          "latency_ms": result.latency_ms})

    def _apply(self, bucket: str, key: str, data: bytes) -> FileResult | None:
        """``apply_file``; a stream file whose values the warehouse rejects is applied in parts
        instead (``apply_separating``) and None returned: the rows it accepts are applied, only the
        rejected ones are dead-lettered. A snapshot read's file is refused whole (BadFileError)."""
        conn = self._connection()
        try:
            # A snapshot's completion marker applies the files it lists from the same bucket.
            return apply_file(conn, key, data, fetch=lambda listed: self._get(bucket, listed))
        except RejectedValuesError:
            if is_snapshot_key(key):
                raise
        separated = apply_separating(conn, key, data)
        if separated.rejected is not None:
            self.dead_letter(bucket, key, separated.rejected, separated.reason)
        self._publish("FilesLoaded", "Count", 1)
        logger.info("file loaded in parts", extra={
            "key": key, "rows": separated.rows, "rows_rejected": separated.rejected_rows})
        return None

    def dead_letter(self, bucket: str, key: str, data: bytes | None, reason: str) -> None:
        """Keep the bad object and why it was refused under the dead-letter prefix."""
        target = f"{self.config.dead_letter_prefix}{key}"
        record = {"bucket": bucket, "key": key, "reason": reason,
                  "dead_lettered_at": dt.datetime.now(dt.UTC).isoformat()}
        try:
            if data is not None:
                self._s3.put_object(Bucket=self.config.dead_letter_bucket, Key=target, Body=data)
            self._s3.put_object(Bucket=self.config.dead_letter_bucket, Key=f"{target}.error.json",
                                Body=json.dumps(record).encode(), ContentType="application/json")
        except AWS_ERRORS as exc:
            raise RetryableLoadError(f"cannot dead-letter s3://{bucket}/{key}: {exc}") from exc
        self._publish("FilesDeadLettered", "Count", 1)
        logger.error("file dead-lettered", extra={
            "key": key, "reason": reason,
            "dead_letter": f"s3://{self.config.dead_letter_bucket}/{target}"})

    def _get(self, bucket: str, key: str) -> bytes:
        try:
            body: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise BadFileError(key, f"object s3://{bucket}/{key} does not exist") from None
        except AWS_ERRORS as exc:
            raise RetryableLoadError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        return body

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                conn = connect(self.config.warehouse_dsn(), "warehouse")
            except (ConfigError, DatabaseUnavailable) as exc:  # may be restarting: retry, never dead-letter
                raise RetryableLoadError(str(exc)) from None
            try:
                missing = pending(conn)
            except psycopg2.Error as exc:
                conn.close()
                raise RetryableLoadError(
                    f"cannot read the warehouse's migrations: {first_line(exc)}") from exc
            if missing:
                # A release's loader code needs its release's schema; the files wait in the queue.
                conn.close()
                names = ", ".join(f"{m.version:03d}_{m.name}" for m in missing)
                raise RetryableLoadError(f"the warehouse schema lacks migrations {names}: run "
                                         "`totes-cdc warehouse migrate` against it (docs/deploy.md)")
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._close()


def _publish_to_powertools(name: str, unit: str, value: float) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


@cache
def _lambda_loader() -> Loader:
    config = LoaderConfig.from_settings(warehouse_dsn, os.environ.get(SNAPSHOT_QUEUE_ENV) or None)
    return Loader(config, _publish_to_powertools)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (SQS event source mapping with ReportBatchItemFailures)."""
    return _lambda_loader().handle_batch(event, context)

"""``totes-cdc load``: the local stand-in for the Lambda SQS event source mapping.

Like the mappings, it runs several loaders at once: ``loader_mapping.maximum_concurrency`` workers
on the processed-files queue (the production concurrency cap, settings.json) and
``snapshot_loader_mapping.maximum_concurrency`` on the snapshot-files queue, where the loader
passes a snapshot read's files on to (warehouse_loader.handler), each a thread with its own SQS, S3
and CloudWatch clients and its own warehouse connection, so files are applied concurrently and in
any order, as in AWS. Each worker long-polls its queue, hands each batch to
:class:`~warehouse_loader.handler.Loader` as an AWS-shaped SQS event, and deletes only the messages
the handler did not report as failed; a failed message becomes visible again after the queue's
visibility timeout, and after ``max_receive_count`` receives SQS moves it to the DLQ, as in AWS. A
message is deleted only after its file is committed, so a kill -9 at any moment loses nothing (a
redelivered file appends nothing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions

from local_aws.metrics import MetricSink
from totes_cdc import metric_names
from totes_cdc.db import connect
from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings
from warehouse_loader.config import LoaderConfig
from warehouse_loader.handler import Loader
from warehouse_loader.migrate import migrate

log = logging.getLogger(__name__)

# Long-poll wait per receive: short enough that SIGTERM is honoured within it.
POLL_WAIT_SECONDS = 2
# Pause after a failed receive/delete before polling again.
RETRY_DELAY_SECONDS = 1.0
AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
# (metrics, S3 client, SQS client) -> the worker's loader
LoaderFactory = Callable[[MetricSink, Any, Any], Loader]


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping would build from received messages."""
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": m.get("MessageAttributes", {}),
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    } for m in messages]}


class Worker:
    """One loader: polls the queue and applies batch by batch on its own warehouse connection."""

    def __init__(self, name: str, queue: tuple[str, str], batch_size: int,
                 loader_factory: LoaderFactory) -> None:
        self.name = name
        self._queue_url, self._queue_arn = queue
        self._batch_size = min(batch_size, 10)  # SQS receives <= 10
        self._region = settings()["region"]
        # boto3 clients are safe to share between threads, sessions are not: one session each.
        session = boto3.session.Session()
        self._sqs = session.client("sqs")
        self.metrics = MetricSink(session.client("cloudwatch"), metric_names.namespace())
        self.loader = loader_factory(self.metrics, session.client("s3"), self._sqs)

    def poll_once(self, wait_seconds: int = POLL_WAIT_SECONDS) -> int:
        """Receive one batch, process it, delete what succeeded; the number of messages received."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url, MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=wait_seconds, MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            return 0
        response = self.loader.handle_batch(sqs_event(messages, self._queue_arn, self._region))
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages) if m["MessageId"] not in failed]
        if done:
            # A delete SQS refuses leaves its message in flight: it comes back after the visibility
            # timeout and is applied again, which changes nothing; say so rather than stay silent.
            refused = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=done).get("Failed", [])
            if refused:
                log.warning("%s: SQS refused to delete %d message(s) (%s); they come back after the "
                            "queue's visibility timeout and are applied again, changing nothing",
                            self.name, len(refused), ", ".join(sorted({f.get("Code", "?") for f in refused})))
        if failed:
            log.warning("%s: %d of %d messages failed; they will be redelivered",
                        self.name, len(failed), len(messages))
        self.metrics.flush()
        return len(messages)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                except AWS_ERRORS as exc:  # SQS or CloudWatch briefly unavailable: poll again
                    log.warning("%s: polling %s failed, retrying: %s", self.name, self._queue_url, exc)
                    stop.wait(RETRY_DELAY_SECONDS)
        finally:
            self.loader.close()


class Runner:
    """The loaders of both queues until ``stop`` is set: ``workers`` (default: the mapping's
    maximum concurrency) on the processed-files queue, the snapshot mapping's on the other."""

    def __init__(self, dsn: str, stop: threading.Event, loader_factory: LoaderFactory | None = None,
                 workers: int | None = None) -> None:
        cfg = settings()
        self._dsn = dsn
        self._stop = stop
        live, snapshot = cfg["loader_mapping"], cfg["snapshot_loader_mapping"]
        count = workers or live["maximum_concurrency"]
        if count < 1:
            raise ConfigError(f"the loader needs at least one worker, not {count}")
        sqs = boto3.client("sqs")
        files = _queue(sqs, cfg["queues"]["processed_files"])
        snapshot_files = _queue(sqs, cfg["queues"]["snapshot_files"])
        self._polled = (f"{files[0]} with {count} workers and {snapshot_files[0]} with "
                        f"{snapshot['maximum_concurrency']}")
        config = LoaderConfig.from_settings(lambda: self._dsn, snapshot_queue_url=snapshot_files[0])
        factory = loader_factory or (lambda metrics, s3, sqs: Loader(config, metrics.add, s3, sqs))
        self.workers = [Worker(f"loader-{n}", files, live["batch_size"], factory)
                        for n in range(1, count + 1)]
        self.workers += [Worker(f"snapshot-loader-{n}", snapshot_files, snapshot["batch_size"], factory)
                         for n in range(1, snapshot["maximum_concurrency"] + 1)]

    def migrate(self) -> None:
        conn = connect(self._dsn, "warehouse")
        try:
            for migration in migrate(conn):
                log.info("warehouse migrated to %03d_%s", migration.version, migration.name)
        finally:
            conn.close()

    def run(self) -> None:
        """Migrate, then run every worker until ``stop``; a worker's unexpected error stops them
        all and is raised (the process exits and its supervisor restarts it, as one would)."""
        self.migrate()
        log.info("loader polling %s", self._polled)
        errors: list[BaseException] = []

        def work(worker: Worker) -> None:
            try:
                worker.run(self._stop)
            except Exception as exc:
                errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=work, args=(w,), name=w.name) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        log.info("loader stopped")


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    """The URL and ARN of the queue ``name``."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    except AWS_ERRORS as exc:
        raise ConfigError(f"cannot use the queue {name}: {exc}") from None
    return url, arn

"""The local event source mapping: what Lambda does between a Kinesis stream and the handler.

It polls every shard (ListShards; a child shard starts only when its parents are read to their
end), gathers up to BatchSize records or MaximumBatchingWindowInSeconds of them, builds the event
Lambda delivers and calls the handler in-process. On a partial batch response it checkpoints just
before the lowest failed record and retries from there; on a function error it bisects the batch
(if BisectBatchOnFunctionError) or retries it; after MaximumRetryAttempts, or for records older
than MaximumRecordAgeInSeconds, it sends an on-failure record (shard + sequence range) to the SQS
destination and moves on. Checkpoints are durable (see checkpoint.py): a restart resumes, never
skips. As in Lambda, each shard is polled on its own (``run``: a thread per shard, one batch of a
shard at a time, so per-shard order holds as with ParallelizationFactor 1): one shard's batching
window, retries and back-off hold up no other shard. The handler itself runs one invocation at a
time (its logger, metrics and the stdout the runner reads its metrics from are per process).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local_aws import process_status
from local_aws.checkpoint import Checkpoint, CheckpointStore
from local_aws.events import ACCOUNT, kinesis_event, on_failure_record
from local_aws.metrics import MetricSink
from stream_processors.config import MappingConfig

log = logging.getLogger(__name__)

Record = Mapping[str, Any]  # a record as GetRecords returns it
Invoke = Callable[[dict[str, Any], Any], Any]

MAX_RECORDS_PER_GET = 10_000  # the GetRecords limit
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
# An idle shard's GetRecords, 5 a second: AWS's per-shard limit (Lambda polls once a second).
IDLE_SLEEP_SECONDS = 0.2
SHARD_REFRESH_SECONDS = 30.0
METRIC_INTERVAL_SECONDS = 10.0
STATUS_INTERVAL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0


@dataclass
class LocalContext:
    """The LambdaContext the handler receives."""

    function_name: str
    region: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_seconds: float = 900.0
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000)


@dataclass
class ShardReader:
    """A shard being read: its iterator and the records fetched but not yet delivered."""

    shard_id: str
    iterator: str | None = None
    buffer: list[Record] = field(default_factory=list)
    first_buffered_at: float = 0.0
    millis_behind_latest: int = 0
    at_end: bool = False  # a closed shard, read to its end


@dataclass
class Outcome:
    """How one invocation went: done, failed from record ``failed_from``, or a function error."""

    failed_from: int | None = None
    function_error: bool = False


def lowest_failure(response: Any, records: Sequence[Record]) -> int | None:
    """Index of the lowest reported failure, or None when the response reports none.

    As Lambda does, an identifier that is missing or not in the batch fails the whole batch.
    """
    failures = response.get("batchItemFailures") if isinstance(response, Mapping) else None
    if not failures:
        return None
    index = {r["SequenceNumber"]: i for i, r in enumerate(records)}
    positions = [index.get(str(f.get("itemIdentifier"))) for f in failures]
    if any(p is None for p in positions):
        return 0
    return min(p for p in positions if p is not None)


def take_batch(buffer: list[Record], batch_size: int) -> list[Record]:
    """The next batch off the front of ``buffer``: at most batch_size records and 6 MB of payload."""
    size = 0
    for count, record in enumerate(buffer[:batch_size]):
        size += (len(record["Data"]) + 2) // 3 * 4 + len(record["PartitionKey"]) + 300
        if size > MAX_PAYLOAD_BYTES and count:
            return buffer[:count]
    return buffer[:batch_size]


class Runner:
    def __init__(self, config: MappingConfig, state_dir: Path, invoke: Invoke, *, kinesis: Any,
                 sqs: Any, cloudwatch: Any, namespace: str) -> None:
        self.config = config
        self.invoke_handler = invoke
        self.kinesis, self.sqs = kinesis, sqs
        self.metrics = MetricSink(cloudwatch, namespace)
        self.state_dir = state_dir
        self.checkpoints = CheckpointStore(state_dir / "checkpoints" / config.stream)
        self.readers: dict[str, ShardReader] = {}
        self.finished: set[str] = set()
        self.counts = {"batches": 0, "records": 0, "item_failures": 0, "function_errors": 0,
                       "sent_to_on_failure_destination": 0}
        self.last_error: str | None = None
        self._lock = threading.Lock()  # readers, finished, counts: shared by the shards' threads
        self._invoking = threading.Lock()  # one handler invocation at a time
        self._stream_arn: str | None = None
        self._queue_url: str | None = None
        self._next_refresh = self._next_metric = self._next_status = 0.0

    # --- AWS resources, resolved on first use -------------------------------------------------

    @property
    def stream_arn(self) -> str:
        if self._stream_arn is None:
            summary = self.kinesis.describe_stream_summary(StreamName=self.config.stream)
            self._stream_arn = str(summary["StreamDescriptionSummary"]["StreamARN"])
        return self._stream_arn

    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            self._queue_url = str(self.sqs.get_queue_url(QueueName=self.config.failure_queue)["QueueUrl"])
        return self._queue_url

    # --- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll and deliver until ``stop`` is set, a thread per shard; AWS errors are logged and
        the shards concerned re-read from their checkpoints. Any other error in a shard's thread
        stops every shard and is raised here."""
        log.info("processing stream %s (batch size %d, window %.1fs)", self.config.stream,
                 self.config.batch_size, self.config.batching_window_seconds)
        halt = threading.Event()  # stop, or a shard's thread failed
        failures: list[BaseException] = []
        threads: dict[str, threading.Thread] = {}
        while not stop.is_set() and not failures:
            try:
                if time.monotonic() >= self._next_refresh:
                    self.refresh_shards()
                self.publish_iterator_age()
            except (BotoCoreError, ClientError) as exc:
                self._aws_error(exc)
                stop.wait(1.0)
            with self._lock:
                shard_ids = list(self.readers)
            for shard_id in shard_ids:
                if shard_id not in threads or not threads[shard_id].is_alive():
                    threads[shard_id] = threading.Thread(
                        target=self.serve, args=(shard_id, halt, failures), name=f"shard {shard_id}",
                        daemon=True)
                    threads[shard_id].start()
            self.write_status()
            stop.wait(IDLE_SLEEP_SECONDS)
        halt.set()
        for thread in threads.values():
            thread.join()
        self.write_status(force=True)
        if failures:
            raise failures[0]

    def serve(self, shard_id: str, stop: threading.Event, failures: list[BaseException]) -> None:
        """Poll one shard until it is read to its end or ``stop`` is set. On an AWS error the
        reader is dropped: ``run`` starts it again from its checkpoint. Any other error is added
        to ``failures`` (for ``run`` to raise) and ends the thread."""
        while not stop.is_set():
            with self._lock:
                reader = self.readers.get(shard_id)
            if reader is None:  # read to its end
                return
            try:
                busy = self.poll(reader, stop)
            except (BotoCoreError, ClientError) as exc:
                self._aws_error(exc)
                with self._lock:
                    self.readers.pop(shard_id, None)
                stop.wait(1.0)
                return
            except Exception as exc:  # handed to run(), which raises it
                failures.append(exc)
                return
            if not busy:
                stop.wait(IDLE_SLEEP_SECONDS)

    def _aws_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("AWS request failed, re-reading shards from their checkpoints: %s", exc)
        self._next_refresh = 0.0

    def cycle(self, stop: threading.Event) -> bool:
        """One round over the shards; True when any shard had records."""
        if time.monotonic() >= self._next_refresh:
            self.refresh_shards()
        busy = False
        with self._lock:
            readers = list(self.readers.values())
        for reader in readers:
            if stop.is_set():
                break
            busy |= self.poll(reader, stop)
        self.publish_iterator_age()
        return busy

    def refresh_shards(self) -> None:
        """Start reading every open-for-us shard: not finished, and its parents finished."""
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.config.stream}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards += page["Shards"]
            if not page.get("NextToken"):
                break
            kwargs = {"NextToken": page["NextToken"]}
        listed = {s["ShardId"] for s in shards}
        with self._lock:
            self._start_readers(shards, listed)
        self._next_refresh = time.monotonic() + SHARD_REFRESH_SECONDS

    def _start_readers(self, shards: list[dict[str, Any]], listed: set[str]) -> None:
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self.readers or shard_id in self.finished:
                continue
            if self.checkpoints.load(shard_id).finished:
                self.finished.add(shard_id)
                continue
            parents = [shard.get(k) for k in ("ParentShardId", "AdjacentParentShardId")]
            if all(p is None or p not in listed or p in self.finished for p in parents):
                self.readers[shard_id] = ShardReader(shard_id)

    def _iterator(self, reader: ShardReader) -> str:
        after = reader.buffer[-1]["SequenceNumber"] if reader.buffer else (
            self.checkpoints.load(reader.shard_id).sequence_number)
        kwargs: dict[str, Any] = {"StreamName": self.config.stream, "ShardId": reader.shard_id}
        if after is None:
            kwargs["ShardIteratorType"] = self.config.starting_position
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        return str(self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"])

    def poll(self, reader: ShardReader, stop: threading.Event) -> bool:
        """Fetch more records of one shard and deliver a batch when one is due."""
        got = 0
        if not reader.at_end and len(reader.buffer) < self.config.batch_size:
            if reader.iterator is None:
                reader.iterator = self._iterator(reader)
            try:
                page = self.kinesis.get_records(
                    ShardIterator=reader.iterator,
                    Limit=min(MAX_RECORDS_PER_GET, self.config.batch_size - len(reader.buffer)))
            except self.kinesis.exceptions.ExpiredIteratorException:
                reader.iterator = None
                return True
            records = page["Records"]
            got = len(records)
            reader.millis_behind_latest = int(page.get("MillisBehindLatest", 0))
            reader.iterator = page.get("NextShardIterator")
            reader.at_end = reader.iterator is None
            if records and not reader.buffer:
                reader.first_buffered_at = time.monotonic()
            reader.buffer += records
        due = reader.buffer and (
            len(reader.buffer) >= self.config.batch_size or reader.at_end
            or time.monotonic() - reader.first_buffered_at >= self.config.batching_window_seconds)
        if due:
            batch = take_batch(reader.buffer, self.config.batch_size)
            if not self.deliver(reader.shard_id, batch, stop):
                return False
            del reader.buffer[:len(batch)]
            reader.first_buffered_at = time.monotonic()
        if reader.at_end and not reader.buffer:
            self.checkpoints.save(reader.shard_id, Checkpoint(
                self.checkpoints.load(reader.shard_id).sequence_number, finished=True))
            with self._lock:
                self.finished.add(reader.shard_id)
                del self.readers[reader.shard_id]
            log.info("shard %s read to its end", reader.shard_id)
            self._next_refresh = 0.0  # its children may start now
        return bool(got or due)

    # --- delivering one batch -------------------------------------------------------------------

    def deliver(self, shard_id: str, records: list[Record], stop: threading.Event) -> bool:
        """Run the batch to completion; False if ``stop`` came first (the checkpoint says where)."""
        pending: deque[tuple[list[Record], int]] = deque([(records, 0)])
        while pending:
            batch, attempts = pending.popleft()
            batch = self._drop_expired(shard_id, batch)
            if not batch:
                continue
            outcome = self.invoke(shard_id, batch)
            if outcome.failed_from is None and not outcome.function_error:
                self._checkpoint(shard_id, batch[-1])
                continue
            if outcome.function_error and self.config.bisect_on_function_error and len(batch) > 1:
                half = len(batch) // 2  # splitting does not use up a retry, as in Lambda
                pending.extendleft([(batch[half:], attempts), (batch[:half], attempts)])
                continue
            if outcome.failed_from:
                self._checkpoint(shard_id, batch[outcome.failed_from - 1])
                batch = batch[outcome.failed_from:]
            attempts += 1
            limit = self.config.maximum_retry_attempts
            if 0 <= limit < attempts:
                self._send_on_failure(shard_id, batch, "RetryAttemptsExhausted", attempts,
                                      "Unhandled" if outcome.function_error else None)
                self._checkpoint(shard_id, batch[-1])
                continue
            pending.appendleft((batch, attempts))
            if stop.wait(min(MAX_BACKOFF_SECONDS, 0.1 * 2 ** attempts)):
                return False
        return True

    def invoke(self, shard_id: str, records: list[Record]) -> Outcome:
        """Call the handler with the Lambda event for ``records``, as the Lambda service would."""
        event = kinesis_event(records, shard_id, self.stream_arn, self.config.region)
        output = io.StringIO()
        self._count(batches=1, records=len(records))
        with self._invoking:  # stdout is the process's: nothing else may print while it is swapped
            try:
                with redirect_stdout(output):
                    response = self.invoke_handler(event, self._context())
            except Exception as exc:  # a function error, whatever the handler raised
                self._count(function_errors=1)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("handler failed on %s %s..%s (%d records): %s", shard_id,
                          records[0]["SequenceNumber"], records[-1]["SequenceNumber"], len(records),
                          self.last_error)
                return Outcome(function_error=True)
            finally:
                self.metrics.add_emf(output.getvalue())
                self.metrics.flush()
        failed_from = lowest_failure(response, records) if self.config.report_batch_item_failures else None
        if failed_from is not None:
            self._count(item_failures=1)
        return Outcome(failed_from=failed_from)

    def _drop_expired(self, shard_id: str, records: list[Record]) -> list[Record]:
        """Hand records older than MaximumRecordAgeInSeconds to the on-failure destination."""
        max_age = self.config.maximum_record_age_seconds
        if max_age < 0:
            return records
        oldest_allowed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=max_age)
        expired = 0
        while expired < len(records) and records[expired]["ApproximateArrivalTimestamp"] < oldest_allowed:
            expired += 1
        if expired:
            self._send_on_failure(shard_id, records[:expired], "RecordAgeExceeded", 0, None)
            self._checkpoint(shard_id, records[expired - 1])
        return records[expired:]

    def _send_on_failure(self, shard_id: str, records: list[Record], condition: str,
                         invoke_count: int, function_error: str | None) -> None:
        """The on-failure destination gets the range *before* the checkpoint moves past it."""
        message = on_failure_record(
            records, shard_id, self.stream_arn, function_arn=self._context().invoked_function_arn,
            condition=condition, invoke_count=invoke_count, function_error=function_error,
            now=dt.datetime.now(dt.UTC))
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(message))
        self._count(sent_to_on_failure_destination=1)
        log.error("gave up %d records of %s (%s..%s, %s): range sent to %s", len(records), shard_id,
                  records[0]["SequenceNumber"], records[-1]["SequenceNumber"], condition,
                  self.config.failure_queue)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self.counts[name] += value

    def _context(self) -> LocalContext:
        return LocalContext(self.config.function_name, self.config.region)

    def _checkpoint(self, shard_id: str, record: Record) -> None:
        self.checkpoints.save(shard_id, Checkpoint(record["SequenceNumber"]))

    # --- what an operator sees ------------------------------------------------------------------

    def publish_iterator_age(self) -> None:
        with self._lock:
            readers = list(self.readers.values())
        if time.monotonic() < self._next_metric or not readers:
            return
        age = max(r.millis_behind_latest for r in readers)
        self.metrics.add("IteratorAgeMilliseconds", "Milliseconds", age)
        self.metrics.flush()
        self._next_metric = time.monotonic() + METRIC_INTERVAL_SECONDS

    def write_status(self, force: bool = False) -> None:
        if not force and time.monotonic() < self._next_status:
            return
        with self._lock:
            readers = list(self.readers.values())
            finished = sorted(self.finished)
            counts = dict(self.counts)
        process_status.write(self.state_dir, self.config.stream, {r.shard_id: {
            "checkpoint": self.checkpoints.load(r.shard_id).sequence_number,
            "millis_behind_latest": r.millis_behind_latest,
            "buffered_records": len(r.buffer)} for r in readers},
            finished_shards=finished, counts=counts, last_error=self.last_error)
        self._next_status = time.monotonic() + STATUS_INTERVAL_SECONDS

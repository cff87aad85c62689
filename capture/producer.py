"""Change events → KPL-aggregated Kinesis records, put in order.

Each event is routed to the shard whose hash-key range holds the MD5 of its partition key (what
Kinesis itself would do) and packed into that shard's open aggregate; an aggregate is closed when
the next event would take it past Kinesis' 1 MiB record limit, and is sent with an explicit hash
key inside the shard's range. An event too large to share a record is sent alone, un-aggregated;
one larger than a whole Kinesis record cannot be sent at all and goes to the dead-letter bucket.

Order: a PutRecords call carries at most one record per shard, and a shard's next record is sent
only once the previous one is accepted. A partial failure or throttling therefore never lets a
newer record of a shard land before an older one: the failed record is retried, with exponential
backoff, before anything after it.

Sending happens on one sender thread, so reading the source goes on while Kinesis answers: batches
are handed over with :meth:`Producer.submit` and sent strictly one after the other; a batch is
never started before the previous one is wholly accepted, and after a failure none is sent again.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from capture.errors import CaptureError, Stopped
from totes_cdc import kpl

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1024 * 1024  # Kinesis: data + partition key of one record
MAX_CALL_RECORDS = 500
MAX_CALL_BYTES = 5 * 1024 * 1024
# Protobuf framing one user record adds to an aggregate beyond its data and partition key, at most
# (tags and length varints, an index, a key-table entry): a bound, cheaper than kpl.record_size.
RECORD_FRAMING = 24


@dataclass(frozen=True)
class Shard:
    shard_id: str
    start_hash: int
    end_hash: int


@dataclass(frozen=True)
class Record:
    """One Kinesis record: an aggregate of ``events`` change events, or one plain event."""

    partition_key: str
    explicit_hash_key: str
    data: bytes
    events: int

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())


class Sink(Protocol):
    """Where records go (Kinesis, or a fake in tests). Both calls may be retried freely."""

    def shards(self) -> Sequence[Shard]:
        """The open shards of the stream."""

    def put_records(self, records: Sequence[Record]) -> list[str | None]:
        """Put the records; per record None when accepted, else the error code. A failure of the
        whole call is reported as every record failing."""


DeadLetter = Callable[[str, bytes, str], None]
"""``(partition_key, data, reason)``: keep an event that cannot be sent, with why."""


@dataclass
class ProducerStats:
    """Counters the metrics publisher reads and resets."""

    events: int = 0
    records: int = 0
    calls: int = 0
    retries: int = 0
    dead_lettered: int = 0


class Producer:
    """Aggregates events per shard and puts them, in order, when flushed."""

    def __init__(self, sink: Sink, dead_letter: DeadLetter, stop: threading.Event | None = None,
                 backoff_seconds: float = 0.1, max_backoff_seconds: float = 10.0) -> None:
        shards = sorted(sink.shards(), key=lambda s: s.start_hash)
        if not shards:
            raise CaptureError("the stream has no open shards: nothing can be put on it")
        self._sink = sink
        self._dead_letter = dead_letter
        self._stop = stop or threading.Event()
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._shards = shards
        self._starts = [s.start_hash for s in shards]
        self._open: list[list[tuple[str, bytes]]] = [[] for _ in shards]
        self._open_size = [0] * len(shards)
        self._open_key_size = [0] * len(shards)  # UTF-8 bytes of the open aggregate's first key
        self._read_at = [0.0] * len(shards)  # when the open aggregate's last event was added
        self._ready: list[deque[Record]] = [deque() for _ in shards]
        self.buffered_bytes = 0
        self.stats = ProducerStats()
        self.accepted: int | None = None
        """The marker of the last submitted batch Kinesis has wholly accepted."""
        self._batches: queue.Queue[tuple[list[deque[Record]], int | None] | None] = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._sender = threading.Thread(target=self._send_batches, name="kinesis-sender", daemon=True)
        self._sender.start()

    def shard_index(self, partition_key: bytes) -> int:
        """Which shard Kinesis would route this (UTF-8) partition key to."""
        digest = int.from_bytes(hashlib.md5(partition_key, usedforsecurity=False).digest())
        return bisect.bisect_right(self._starts, digest) - 1

    def add(self, partition_key: str, data: bytes) -> None:
        """Buffer one event; it is sent by the next :meth:`flush`."""
        key = partition_key.encode()
        index = self.shard_index(key)
        size = len(data) + len(key) + RECORD_FRAMING
        if kpl.FIXED_OVERHEAD + size + len(key) > MAX_RECORD_BYTES:
            self._close(index)
            if len(data) + len(key) > MAX_RECORD_BYTES:
                reason = (f"event of {len(data)} bytes with partition key {partition_key!r} exceeds "
                          f"the Kinesis record limit of {MAX_RECORD_BYTES} bytes")
                log.error("dead-lettering an event: %s", reason)
                self._dead_letter(partition_key, data, reason)
                self.stats.dead_lettered += 1
                return
            self._queue(index, Record(partition_key, str(self._shards[index].start_hash), data, 1))
            return
        if self._open[index] and (kpl.FIXED_OVERHEAD + self._open_size[index] + size
                                  + self._open_key_size[index] > MAX_RECORD_BYTES):
            self._close(index)
        if not self._open[index]:
            self._open_key_size[index] = len(key)
        self._open[index].append((partition_key, data))
        self._read_at[index] = time.time()
        self._open_size[index] += size
        self.buffered_bytes += size

    def _close(self, index: int) -> None:
        pending = self._open[index]
        if pending:
            self._open[index] = []
            self.buffered_bytes -= self._open_size[index]
            self._open_size[index] = 0
            self._queue(index, Record(pending[0][0], str(self._shards[index].start_hash),
                                      kpl.aggregate(pending, self._read_at[index]), len(pending)))

    def _queue(self, index: int, record: Record) -> None:
        self._ready[index].append(record)
        self.buffered_bytes += record.size

    @property
    def busy(self) -> bool:
        """Whether submitted batches are still being sent."""
        return self._batches.unfinished_tasks > 0

    @property
    def has_room(self) -> bool:
        """Whether :meth:`submit` would return at once (fewer than two batches wait)."""
        return not self._batches.full()

    def submit(self, marker: int | None) -> None:
        """Hand every event added so far to the sender; :attr:`accepted` becomes ``marker`` once
        Kinesis holds them all (and all submitted before). Blocks while two batches wait."""
        self.raise_failure()
        for index in range(len(self._shards)):
            self._close(index)
        batch, self._ready = self._ready, [deque() for _ in self._shards]
        self.buffered_bytes = 0
        self._batches.put((batch, marker))

    def flush(self) -> None:
        """Return once Kinesis has accepted every event added so far (retrying, in order)."""
        self.submit(None)
        self._batches.join()
        self.raise_failure()

    def raise_failure(self) -> None:
        """Re-raise, in the caller's thread, what stopped the sender."""
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """End the sender thread once it has finished what it holds."""
        self._batches.put(None)
        self._sender.join()

    def _send_batches(self) -> None:
        while True:
            item = self._batches.get()
            try:
                if item is None:
                    return
                batch, marker = item
                if self._failure is None:  # after a failure nothing more is sent: order first
                    try:
                        self._send(batch)
                    except BaseException as exc:  # handed to the producing thread
                        self._failure = exc
                    else:
                        if marker is not None:
                            self.accepted = marker
            finally:
                self._batches.task_done()

    def _send(self, ready: list[deque[Record]]) -> None:
        delay = self._backoff
        while any(ready):
            calls: list[list[int]] = [[]]
            size = 0
            for index, pending in enumerate(ready):
                if pending:
                    record = pending[0]
                    if len(calls[-1]) == MAX_CALL_RECORDS or size + record.size > MAX_CALL_BYTES:
                        calls.append([])
                        size = 0
                    calls[-1].append(index)
                    size += record.size
            failed = 0
            for indexes in calls:
                results = self._sink.put_records([ready[i][0] for i in indexes])
                self.stats.calls += 1
                for index, error in zip(indexes, results, strict=True):
                    if error is None:
                        record = ready[index].popleft()
                        self.stats.records += 1
                        self.stats.events += record.events
                    else:
                        failed += 1
                        last_error = error
            if failed:
                self.stats.retries += failed
                log.warning("PutRecords: %d record(s) not accepted (%s); retrying them first, in %.1fs",
                            failed, last_error, delay)
                if self._stop.wait(delay):
                    raise Stopped("stopped while retrying PutRecords")
                delay = min(delay * 2, self._max_backoff)
            else:
                delay = self._backoff

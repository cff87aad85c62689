"""The capture service: initial snapshot into the lake, then the slot's change stream into Kinesis.

One session = one connection to the source: check it, make sure the publication and slot exist,
finish the initial snapshot if it is not complete (capture.snapshot: straight to the lake), then
stream. When the source goes away (restart,
network), the session ends and a new one starts after a backoff, from the slot's confirmed
position: events not yet acknowledged are simply read and sent again (duplicates, never gaps).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Sequence

import boto3

from capture import source
from capture.checkpoint import Checkpoint
from capture.config import CaptureConfig
from capture.decoder import (
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputMessage,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
)
from capture.errors import CaptureError, ResyncFailed, Stopped
from capture.events import EventBuilder
from capture.metrics import MetricsPublisher
from capture.policy import Step, StreamPolicy, Timing
from capture.producer import DeadLetter, Producer, Sink
from capture.replication import ReplicationStream
from capture.snapshot import LakeSnapshot
from capture.state import MemoryStateStore, SnapshotState, StateStore
from totes_cdc import db
from totes_cdc.contract import encode
from totes_cdc.errors import ConfigError, DatabaseUnavailable, TransientError, first_line
from totes_cdc.lakefiles import ObjectStore
from totes_cdc.settings import settings

log = logging.getLogger(__name__)

STATUS_SECONDS = 10.0
"""Longest time between two status updates to the server."""


class CaptureService:
    def __init__(self, config: CaptureConfig, sink: Sink, dead_letter: DeadLetter, store: StateStore,
                 publisher: MetricsPublisher, *, stop: threading.Event | None = None,
                 objects: ObjectStore | None = None) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self._objects = objects or ObjectStore(boto3.client("s3"))
        self._sink = sink
        self._dead_letter = dead_letter
        self._store = store
        self._publisher = publisher
        self._connected = False
        self._phase = "starting"
        self._state: SnapshotState | None = None
        self._acked = 0
        self._behind_ms = 0.0
        self._heartbeats = 0
        self._last_publish = (time.monotonic(), 0, 0, 0, 0, 0)  # time, events, records, calls, retries, beats

    # --- sessions -------------------------------------------------------------------------------

    def run(self) -> None:
        """Capture until :attr:`stop` is set.

        A transient error (the source restarting, a broken connection) ends the session and a new
        one starts after a backoff; a terminal one (a dropped table, a slot of another plugin, a
        refused statement) ends capture. Only a source never reached at all is reported at once.
        """
        delay = 0.5
        self._publisher.mark(self._phase)
        while not self.stop.is_set():
            try:
                with db.translated("source"):
                    self._session()
            except Stopped:
                break
            except TransientError as exc:
                if not self._connected:
                    raise  # never reached the source: nothing to resume, say so and stop
                # The source (DatabaseUnavailable) or the lake (StoreError) failing for now: said
                # as what it is.
                what = "source connection lost" if isinstance(exc, DatabaseUnavailable) else "session failed"
                log.warning("%s (%s); reconnecting in %.1fs from the slot's confirmed position",
                            what, first_line(exc), delay)
                self._phase = "reconnecting"
                self._publisher.mark(self._phase)
                if self.stop.wait(delay):
                    break
                delay = min(delay * 2, self.config.reconnect_max_seconds)
            else:
                delay = 0.5
        log.info("capture stopped; slot %s acknowledged up to %s",
                 self.config.slot, source.format_lsn(self._acked))

    def _session(self) -> None:
        cfg = self.config
        conn = source.connect(cfg.source_dsn)
        try:
            src = source.Source(conn)
            src.check(cfg.tables)
            self._connected = True
            src.ensure_publication(cfg.publication, cfg.tables)
            self._snapshot(src)
            producer = Producer(self._sink, self._dead_letter, self.stop)
            try:
                self._stream(src, conn.server_version, producer)
            finally:
                producer.close()  # a next session must not put before this one's last batch
        finally:
            conn.close()

    # --- snapshot -------------------------------------------------------------------------------

    def _snapshot(self, src: source.Source) -> None:
        """Take or finish the initial snapshot, into the lake."""
        cfg = self.config
        position = src.slot_position(cfg.slot)
        state = self._store.load()
        if position is None:
            # Saved before the slot exists, so a crash in between still finds an unfinished snapshot.
            state = SnapshotState(cfg.slot, 0)
            self._store.save(state)
            temporary = False
        elif state is None or state.slot != cfg.slot or not state.complete(list(cfg.tables)):
            if state is None or state.slot != cfg.slot:
                log.warning("slot %s exists but no snapshot progress was found for it: reading every "
                            "table again, as a resync (rows already downstream are read again)", cfg.slot)
                state = SnapshotState(cfg.slot, position, resync=True)
            temporary = True
        else:
            self._state = state
            return
        self._state = state
        self._phase = "snapshot"
        self._publisher.mark(self._phase)

        def created(lsn: int) -> None:
            if temporary:
                log.info("%s at %s", "reading every table again" if state.resync
                         else "resuming the initial snapshot", source.format_lsn(lsn))
                return
            state.snapshot_lsn = lsn
            self._store.save(state)
            log.info("created slot %s at %s; taking the initial snapshot", cfg.slot, source.format_lsn(lsn))

        reader = LakeSnapshot(cfg.source_dsn, cfg.lake, self._objects, self._store, self._publisher.progress,
                              stop=self.stop, workers=cfg.snapshot_workers, file_rows=cfg.snapshot_chunk_rows)
        with self._publisher.reporting(cfg.metrics_seconds, heartbeat=True):
            reader.take(state, cfg.tables, f"{cfg.slot}_resume_{os.getpid()}" if temporary else cfg.slot,
                        temporary=temporary, on_slot=created)
        log.info("%s complete: %s", "read again" if state.resync else "initial snapshot", ", ".join(
            f"{t} {p.rows}" for t, p in state.tables.items()))

    # --- stream ---------------------------------------------------------------------------------

    def _stream(self, src: source.Source, server_version: int, producer: Producer) -> None:
        cfg = self.config
        start = src.slot_position(cfg.slot)
        if start is None:
            raise CaptureError(f"replication slot {cfg.slot} disappeared; restart capture to take a new "
                               "initial snapshot")
        self._acked = start
        # publication_names is a list of identifiers: quoted, as the publication was created
        options = {"proto_version": "1", "publication_names": '"' + cfg.publication.replace('"', '""') + '"'}
        if server_version >= 140000:
            options["messages"] = "true"  # heartbeats arrive as logical messages
        stream = ReplicationStream(cfg.source_dsn, source.SESSION_OPTIONS)
        try:
            # Report on our own at least three times per wal_sender_timeout: while the producer is
            # full the loop reads nothing, so it sees no keepalive to answer.
            timeout = stream.wal_sender_timeout()
            status = min(STATUS_SECONDS, timeout / 3) if timeout > 0 else STATUS_SECONDS
            stream.start(cfg.slot, start, options)
            log.info("streaming slot %s from %s", cfg.slot, source.format_lsn(start))
            self._phase = "streaming"
            timing = Timing(cfg.max_batch_delay_ms / 1000, cfg.flush_bytes, cfg.heartbeat_seconds,
                            status, cfg.metrics_seconds)
            policy = StreamPolicy(Checkpoint(start), timing, time.monotonic())
            _Stream(self, src, stream, producer, policy=policy).run()
        finally:
            stream.close()

    def set_acked(self, lsn: int) -> None:
        """The position last reported to the slot (for the status file and the last log line)."""
        self._acked = lsn

    # --- metrics --------------------------------------------------------------------------------

    def heartbeat(self, src: source.Source) -> None:
        src.heartbeat()
        self._heartbeats += 1

    def publish_metrics(self, producer: Producer, src: source.Source, force: bool = False) -> None:
        now = time.monotonic()
        last, events, records, calls, retries, beats = self._last_publish
        if not force and now - last < self.config.metrics_seconds:
            return
        stats = producer.stats
        lag = src.slot_lag_bytes(self.config.slot) or 0
        elapsed = max(now - last, 1e-6)
        rate = (stats.events - events) / elapsed
        new_calls = stats.calls - calls
        batch = (stats.records - records) / new_calls if new_calls else 0.0
        self._publisher.publish([
            ("SlotLagBytes", float(lag), "Bytes"),
            ("MillisBehindSource", self._behind_ms, "Milliseconds"),
            ("EventsPublished", float(stats.events - events), "Count"),
            ("PutRecordsBatchSize", batch, "Count"),
            ("PutRecordsRetries", float(stats.retries - retries), "Count"),
            ("CaptureHeartbeat", float(self._heartbeats - beats), "Count"),
        ], {
            "updated_at": dt.datetime.now(dt.UTC).isoformat(),
            "phase": self._phase,
            "slot": self.config.slot,
            "stream": self.config.stream,
            "slot_lag_bytes": lag,
            "millis_behind_source": round(self._behind_ms),
            "events_per_second": round(rate, 1),
            "events_published": stats.events,
            "put_records_retries": stats.retries,
            "dead_lettered": stats.dead_lettered,
            "last_acked_lsn": source.format_lsn(self._acked),
            "snapshot": {} if self._state is None else {
                t: {"done": p.complete, "rows": p.rows, "total": p.estimate}
                for t, p in self._state.tables.items()},
        })
        self._last_publish = (now, stats.events, stats.records, stats.calls, stats.retries, self._heartbeats)

    def set_behind(self, commit_ts: dt.datetime | None) -> None:
        self._behind_ms = 0.0 if commit_ts is None else max(
            0.0, (dt.datetime.now(dt.UTC) - commit_ts).total_seconds() * 1000)


class _Stream:
    """One START_REPLICATION run: messages → events → producer, flushed on size or time."""

    def __init__(self, service: CaptureService, src: source.Source, stream: ReplicationStream,
                 producer: Producer, *, policy: StreamPolicy) -> None:
        self.service = service
        self.src = src
        self.stream = stream
        self.producer = producer
        self.policy = policy
        self.checkpoint = policy.checkpoint
        self.builder = EventBuilder(src)
        self.last_commit_ts: dt.datetime | None = None

    def handle(self, message: PgOutputMessage) -> None:
        kind = type(message)
        if kind is Insert or kind is Update or kind is Delete:
            for event, key in self.builder.change(message):  # type: ignore[arg-type]
                self.producer.add(key, encode(event))
        elif isinstance(message, Begin):
            self.builder.begin(message)
        elif isinstance(message, Commit):
            self.checkpoint.completed(message.end_lsn)
            self.last_commit_ts = message.commit_ts
        elif isinstance(message, Relation):
            self.builder.relation(message)
        elif isinstance(message, Truncate):
            for event, key in self.builder.truncate(message):
                self.producer.add(key, encode(event))
        elif isinstance(message, Message):
            if not message.transactional:  # a heartbeat: nothing before it is left unsent
                self.checkpoint.completed(message.lsn)
        elif not isinstance(message, (Type, Origin)):
            raise CaptureError(f"unexpected {kind.__name__} message: capture asks for protocol 1, "
                               "without streaming of in-progress transactions")

    def run(self) -> None:
        """Read, hand over, acknowledge: the I/O half of the loop, the decisions are the policy's."""
        service, stream, producer, policy = self.service, self.stream, self.producer, self.policy
        # Bound once: this runs per message.
        handle, on_message, read, stopped = self.handle, policy.on_message, stream.read, service.stop.is_set
        monotonic = time.monotonic
        try:
            while not stopped():
                message = read()
                now = monotonic()
                if message.__class__ is bytes:
                    handle(decode(message))
                    if not on_message(now, producer.buffered_bytes):
                        continue
                elif message is not None:
                    policy.on_keepalive(message.reply_requested)  # type: ignore[union-attr]
                while True:
                    step = policy.decide(now, accepted=producer.accepted,
                                         buffered_bytes=producer.buffered_bytes,
                                         room=producer.has_room, busy=producer.busy)
                    self.act(step)
                    if step.read or service.stop.is_set():
                        break
                    service.stop.wait(step.wake - now)  # backpressure: the producer is full
                    now = time.monotonic()
                if message is None:
                    service.set_behind(None)
                    stream.wait(min(step.wake - now, 0.5))
        finally:
            if service.stop.is_set():
                try:
                    producer.submit(policy.checkpoint.completed_lsn)
                    producer.flush()
                    self.report(policy.acknowledge(producer.accepted))
                except Stopped:
                    log.info("stopping with unsent events: they are read again on the next start")

    def act(self, step: Step) -> None:
        if step.submit is not None:
            self.service.set_behind(self.last_commit_ts)
            self.producer.submit(step.submit)
        self.producer.raise_failure()
        self.report(step.status)
        if step.heartbeat:
            self.service.heartbeat(self.src)
        if step.publish:
            self.service.publish_metrics(self.producer, self.src, force=True)

    def report(self, lsn: int | None) -> None:
        """Tell the server the acknowledged position: the only place the slot is moved."""
        if lsn is not None:
            self.stream.send_status(lsn)
            self.service.set_acked(lsn)


def resync(config: CaptureConfig, tables: Sequence[str], publisher: MetricsPublisher, *,
           stop: threading.Event | None = None, objects: ObjectStore | None = None) -> SnapshotState:
    """Read ``tables`` again into the lake while the capture service streams: the initial snapshot's
    read, in a snapshot exported by a temporary slot at C', its markers saying resync (the loader
    then tombstones rows the read did not see). Changes after C' reach the lake through the stream.
    Not resumable: a resync that stops is run again."""
    conn = source.connect(config.source_dsn)
    try:
        src = source.Source(conn)
        src.check(tables)
        published = src.published(config.publication)
    finally:
        conn.close()
    # The loader mirrors only what capture streams: a table outside the publication (before capture
    # made it: outside the settings' tables) would be read into the lake and dead-lettered there.
    captured = published if published is not None else {
        source.qualified(t) for t in settings()["source_tables"]}
    if outside := [t for t in tables if source.qualified(t) not in captured]:
        where = (f"publication {config.publication}" if published is not None
                 else "the settings' source_tables")
        raise ConfigError(f"not captured (not in {where}): {', '.join(outside)}")
    state = SnapshotState(config.slot, 0, resync=True)
    reader = LakeSnapshot(config.source_dsn, config.lake, objects or ObjectStore(boto3.client("s3")),
                          MemoryStateStore(), publisher.progress, stop=stop or threading.Event(),
                          workers=config.snapshot_workers, file_rows=config.snapshot_chunk_rows)

    def created(lsn: int) -> None:
        state.snapshot_lsn = lsn
        log.info("resync of %s at %s", ", ".join(tables), source.format_lsn(lsn))

    try:
        with publisher.reporting(config.metrics_seconds), db.translated("source"):
            reader.take(state, tables, f"{config.slot[:40]}_resync_{os.getpid()}", temporary=True,
                        on_slot=created)
    except TransientError as exc:
        raise ResyncFailed(first_line(exc)) from exc
    return state

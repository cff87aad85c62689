"""The slot is confirmed only past events the stream has accepted, whatever the server sends.

The server sends keepalives (with a short ``wal_sender_timeout``, often) carrying its WAL end;
when a long transaction that began before the last acknowledged commit is being read while the
stream is slow, its BEGIN and first changes carry WAL positions below that acknowledged commit.
A reader that confirms the keepalive's WAL end at such a moment confirms transactions whose
events are still waiting for the stream, and a crash then loses them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from capture.producer import Record
from capture.source import parse_lsn
from tests.conftest import query
from tests.integration.capture.conftest import (
    FlakySink,
    assert_versions_exact,
    dedupe,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from totes_cdc import kpl
from totes_cdc.contract import decode

pytestmark = pytest.mark.integration

LONG_TRANSACTION_ROWS = 40_000
# Batches of up to 2 s and 64 MiB: the producer holds the whole long transaction while the stream
# stalls, so capture goes on reading (and seeing keepalives) with unaccepted events in its queue.
BATCH_DELAY_MS = 2000
FLUSH_BYTES = 64 * 1024 * 1024
T3 = "UPDATE design SET design_name = (design_name::int + 1)::text WHERE design_id IN (2, 3, 4)"


class StallingSink(FlakySink):
    """The real Kinesis sink; while ``stall`` is set, a call waits for ``release`` (a stalled stream).

    Remembers the LSN of every event it has had accepted, in order.
    """

    def __init__(self) -> None:
        super().__init__(lambda call, i: False)
        self.stall = threading.Event()
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.accepted: list[int] = []

    def put_records(self, records: list[Record]) -> list[str | None]:  # type: ignore[override]
        if self.stall.is_set():
            self.blocked.set()
            self.release.wait()
        results = super().put_records(records)
        for record, error in zip(records, results, strict=True):
            if error is None:
                self.accepted += [decode(data).lsn for _, data in kpl.deaggregate(record.data, "")]
        return results


WAL_SENDER_TIMEOUT = 10.0


def short_wal_sender_timeout(dsn: str) -> None:
    """This database's replication connections: a keepalive is due 5 s after the last reply."""
    name = query(dsn, "SELECT current_database()")[0][0]
    execute(dsn, f'ALTER DATABASE "{name}" SET wal_sender_timeout = \'{WAL_SENDER_TIMEOUT:.0f}s\'')


def confirmed_flush(dsn: str, slot: str) -> int | None:
    rows = query(dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                 (slot,))
    return parse_lsn(rows[0][0]) if rows and rows[0][0] else None


class InterleavedLongTransaction:
    """T1 begins and writes many rows; then others commit (T2, T3); later T1 commits."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg2.connect(dsn)
        self.cur = self.conn.cursor()
        self.cur.execute("INSERT INTO design (design_name, file_location, file_name, last_updated) "
                         f"SELECT '0', '/d', 'long', now() FROM generate_series(1, {LONG_TRANSACTION_ROWS})")

    def commit_as_a_keepalive_falls_due(self, slot: str) -> int:
        """Commit T1 just before the server owes capture a keepalive, so that the keepalive goes
        out while T1's first changes are being sent (a capture that reports its position often
        enough is never owed one: then within half a wal_sender_timeout); a WAL position below
        T1's commit record, above every commit before it."""
        deadline = time.time() + WAL_SENDER_TIMEOUT / 2
        while time.time() < deadline:
            rows = query(self.dsn, "SELECT extract(epoch FROM r.reply_time) FROM pg_stat_replication r "
                         "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
                         (slot,))
            due = float(rows[0][0]) + WAL_SENDER_TIMEOUT / 2 if rows and rows[0][0] else time.time()
            if due - time.time() < 0.2:
                time.sleep(max(0.0, due - time.time() - 0.05))
                break
            time.sleep(0.05)
        self.cur.execute("INSERT INTO design (design_name, file_location, file_name, last_updated) "
                         "VALUES ('0', '/d', 'long-last', now())")
        self.cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        before_commit = parse_lsn(self.cur.fetchone()[0])
        self.conn.commit()
        self.conn.close()
        return before_commit


@pytest.fixture
def keepalive_dsn(totesys_dsn: str) -> Iterator[str]:
    short_wal_sender_timeout(totesys_dsn)
    seed_designs(totesys_dsn, 20)
    yield totesys_dsn


def test_keepalives_never_confirm_events_the_stream_has_not_accepted(keepalive_dsn, capture_factory):
    dsn = keepalive_dsn
    sink = StallingSink()
    service = capture_factory(dsn, sink=sink, max_batch_delay_ms=BATCH_DELAY_MS, flush_bytes=FLUSH_BYTES)
    slot = service.config.slot
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    t1 = InterleavedLongTransaction(dsn)
    execute(dsn, "UPDATE design SET design_name = '1' WHERE design_id = 1")  # T2
    wait_for(slot_caught_up(dsn, slot), what="T2 to be acknowledged")
    samples: list[tuple[int, int]] = []  # (confirmed flush LSN, events accepted when it was read)
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            # The slot first, then the sink: everything confirmed by then was accepted before it
            # was confirmed (the other order counts events accepted and confirmed in between).
            confirmed = confirmed_flush(dsn, slot) or 0
            samples.append((confirmed, len(sink.accepted)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        sink.stall.set()
        execute(dsn, T3)
        wait_for(sink.blocked.is_set, what="the stream to stall on T3")
        t1.commit_as_a_keepalive_falls_due(slot)
        time.sleep(4)  # capture reads T1 and the server's keepalives; the stream is still stalled
        sink.release.set()
        wait_for(slot_caught_up(dsn, slot), what="capture to catch up")
    finally:
        sink.release.set()
        sampling.set()
        sampler.join()
    events = read_stream()
    assert_versions_exact(dedupe(events), dsn)
    lsns = sorted({e.lsn for e in events if not e.snapshot})
    for confirmed, accepted_count in samples:
        accepted = set(sink.accepted[:accepted_count])
        unaccepted = [lsn for lsn in lsns if lsn < confirmed and lsn not in accepted]
        assert not unaccepted, (f"slot confirmed at {confirmed:X} while {len(unaccepted)} transaction(s) "
                                f"below it were not accepted by the stream, the first at {unaccepted[0]:X}")


STALLING_CAPTURE = """
import signal, sys, time
from pathlib import Path
from capture.config import CaptureConfig
from capture.kinesis import KinesisSink, S3DeadLetter
from capture.metrics import MetricsPublisher
from capture.service import CaptureService
from capture.state import LocalStateStore

dsn, slot, state = sys.argv[1], sys.argv[2], Path(sys.argv[3])
stall, blocked = state / "stall", state / "blocked"

class StallingSink(KinesisSink):
    def put_records(self, records):
        while stall.exists():
            blocked.touch()
            time.sleep(0.05)
        return super().put_records(records)

config = CaptureConfig.from_settings(dsn, state, tables=("design",), slot=slot, heartbeat_seconds=0.5,
                                     max_batch_delay_ms=int(sys.argv[4]), flush_bytes=int(sys.argv[5]))
service = CaptureService(config, StallingSink(config.stream), S3DeadLetter("unused", "unused/"),
                         LocalStateStore(state, slot), MetricsPublisher(state / "status.json"))
signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
service.run()
"""


def test_kill_9_while_the_stream_stalls_during_an_interleaved_long_transaction_loses_nothing(
        keepalive_dsn: str, aws_env: dict[str, Any], tmp_path: Any) -> None:
    dsn = keepalive_dsn
    slot = f"stall_{uuid.uuid4().hex[:8]}"
    env = {**aws_env, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-c", STALLING_CAPTURE, dsn, slot, str(tmp_path), str(BATCH_DELAY_MS),
               str(FLUSH_BYTES)]
    stall, blocked = tmp_path / "stall", tmp_path / "blocked"
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: confirmed_flush(dsn, slot) is not None, what="the slot")
        t1 = InterleavedLongTransaction(dsn)
        execute(dsn, "UPDATE design SET design_name = '1' WHERE design_id = 1")  # T2
        wait_for(slot_caught_up(dsn, slot), what="T2 to be acknowledged")
        stall.touch()
        execute(dsn, T3)
        wait_for(blocked.exists, what="the stream to stall on T3")
        before_commit = t1.commit_as_a_keepalive_falls_due(slot)
        # A correct capture cannot confirm T3 while the stream stalls; a wrong one does within
        # seconds. Either way, stop it the hard way with T3 unaccepted.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (confirmed_flush(dsn, slot) or 0) < before_commit:
            time.sleep(0.02)
        process.kill()
        process.wait()
        stall.unlink()
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        wait_for(slot_caught_up(dsn, slot), what="capture to catch up")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        execute(dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    assert_versions_exact(dedupe(read_stream()), dsn)

"""The capture loop's policy, and the loop on scripted replication messages: no server, no Kinesis.

What matters above all: the position reported to the server is only ever one the stream has
accepted every event before, whatever keepalives arrive and whatever WAL end they carry.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from capture.checkpoint import Checkpoint
from capture.config import CaptureConfig
from capture.metrics import MetricsPublisher
from capture.policy import POLL_SECONDS, StreamPolicy, Timing
from capture.producer import Producer, Record, Shard
from capture.replication import Keepalive
from capture.service import CaptureService, _Stream
from totes_cdc.lakefiles import LakeLocation

TIMING = Timing(batch_delay=0.05, flush_bytes=1000, heartbeat=60, status=10, metrics=60)
START = 0x100


def policy(now: float = 0.0) -> StreamPolicy:
    return StreamPolicy(Checkpoint(START), TIMING, now)


def decide(p: StreamPolicy, now: float, accepted: int | None = None, buffered: int = 0, room: bool = True,
           busy: bool = False):
    return p.decide(now, accepted=accepted, buffered_bytes=buffered, room=room, busy=busy)


def test_a_keepalive_is_answered_with_the_acknowledged_position_never_the_received_one():
    p = policy()
    p.on_message(0.0, 10)
    p.checkpoint.completed(0x300)  # a commit handed to the producer, not yet accepted
    p.on_keepalive(True)
    assert decide(p, 0.01).status == START
    assert decide(p, 0.02).status is None  # answered once
    assert decide(p, 0.03, accepted=0x300).status == 0x300


def test_nothing_is_reported_beyond_the_accepted_marker():
    p = policy()
    p.checkpoint.completed(0x300)
    with pytest.raises(ValueError, match="beyond what was completed"):
        decide(p, 0.0, accepted=0x400)


def test_a_batch_is_submitted_with_its_completed_position_once_due():
    p = policy()
    assert not p.on_message(0.0, 10)
    p.checkpoint.completed(0x200)
    assert not p.on_message(0.01, 20)
    assert decide(p, 0.01).submit is None
    assert p.on_message(0.06, 30)
    step = decide(p, 0.06)
    assert step.submit == 0x200 and step.read
    assert decide(p, 0.07).submit is None  # nothing new buffered since


def test_a_full_buffer_is_submitted_before_its_delay():
    p = policy()
    assert p.on_message(0.0, TIMING.flush_bytes)
    assert decide(p, 0.0, buffered=TIMING.flush_bytes).submit == START


def test_a_full_producer_stops_reading_and_status_updates_go_on():
    p = policy()
    p.on_message(0.0, 10)
    step = decide(p, 0.1, room=False)
    assert step.submit is None and not step.read and step.wake <= 0.1 + POLL_SECONDS
    step = decide(p, TIMING.status + 0.1, room=False)
    assert step.status == START and not step.read
    step = decide(p, TIMING.status + 0.2, room=True)
    assert step.submit == START and step.read


def test_timers_heartbeat_publish_and_wake():
    p = policy()
    step = decide(p, 1.0)
    assert not step.heartbeat and not step.publish and step.wake == 1.0 + 1.0
    step = decide(p, 60.0)
    assert step.heartbeat and step.publish and step.status == START
    assert decide(p, 60.0, busy=True).wake == 60.0 + POLL_SECONDS


# --- the loop on scripted messages ----------------------------------------------------------------

def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def relation() -> bytes:
    columns = b"".join(bytes([key]) + _string(name) + struct.pack(">Ii", oid, -1)
                       for key, name, oid in ((1, "id", 23), (0, "name", 25)))
    return b"R" + struct.pack(">I", 16384) + _string("public") + _string("design") + b"d" \
        + struct.pack(">H", 2) + columns


def begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, 0, xid)


def insert(key: int) -> bytes:
    values = [str(key).encode(), b"x"]
    return b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", 2) + b"".join(
        b"t" + struct.pack(">I", len(v)) + v for v in values)


def commit(commit_lsn: int, end_lsn: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, 0)


class ScriptedStream:
    """Replays messages; a callable in the script is run when reached. Records status updates."""

    def __init__(self, script: list[bytes | Keepalive | Callable[[], None]]) -> None:
        self.script = list(script)
        self.statuses: list[int] = []

    def read(self) -> bytes | Keepalive | None:
        while self.script:
            item = self.script.pop(0)
            if callable(item):
                item()
                continue
            return item
        return None

    def send_status(self, lsn: int) -> None:
        self.statuses.append(lsn)

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.005))


class StalledSink:
    """One shard; every put waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.accepted: list[Record] = []

    def shards(self) -> list[Shard]:
        return [Shard("a", 0, 2**128 - 1)]

    def put_records(self, records: list[Record]) -> list[str | None]:
        self.release.wait()
        self.accepted += records
        return [None] * len(records)


class Catalog:
    def describe(self, relation):
        return ["integer", "text"], ["id"]

    def heartbeat(self) -> None:
        pass

    def slot_lag_bytes(self, slot: str) -> int:
        return 0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_the_loop_acknowledges_only_what_the_stream_accepted(tmp_path: Path):
    """T1 begins before T2 commits and ends after; keepalives carry WAL ends past both, some asking
    for a reply, while the stream accepts nothing: only the start position may be reported."""
    sink = StalledSink()
    stream = ScriptedStream([
        relation(),
        begin(0x200, 2), insert(1), commit(0x200, 0x210),                 # T2
        Keepalive(0x210, True),
        begin(0x400, 1), insert(2), Keepalive(0x500, True), insert(3),   # T1, begun at 0x180
        Keepalive(0x500, False), commit(0x400, 0x410),
        Keepalive(0x600, True),
    ])
    config = CaptureConfig("", "stream", ("public.design",), "slot", "pub", tmp_path,
                           LakeLocation.from_settings())
    service = CaptureService(config, sink, lambda *_: None, None,  # type: ignore[arg-type]
                             MetricsPublisher(tmp_path / "status.json"))
    producer = Producer(sink, lambda *_: None, service.stop)
    loop = _Stream(service, Catalog(), stream, producer,  # type: ignore[arg-type]
                   policy=StreamPolicy(Checkpoint(START), TIMING, time.monotonic()))
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: not stream.script and producer.busy, "the script to be read")
        time.sleep(0.2)
        assert stream.statuses and set(stream.statuses) == {START}  # the replies: nothing accepted
        sink.release.set()
        wait_until(lambda: 0x410 in stream.statuses, "T1 to be acknowledged")
    finally:
        sink.release.set()
        service.stop.set()
        thread.join(timeout=10)
        producer.close()
    assert stream.statuses == sorted(stream.statuses) and max(stream.statuses) == 0x410
    assert len(sink.accepted) == 1 and sink.accepted[0].events == 3

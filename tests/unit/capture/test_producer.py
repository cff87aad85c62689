"""Aggregation, size limits and ordered retries of the producer, against a fake sink."""

from __future__ import annotations

import random
import threading

import pytest

from capture.checkpoint import Checkpoint
from capture.errors import CaptureError, Stopped
from capture.producer import MAX_RECORD_BYTES, Producer, Record, Shard
from totes_cdc import kpl

HALF = 2**127


class FakeSink:
    """Two shards; refuses records as ``refuse(call, index)`` says; keeps what it accepted per shard."""

    def __init__(self, refuse=lambda call, index: False):
        self.refuse = refuse
        self.calls = []
        self.accepted = {"a": [], "b": []}

    def shards(self):
        return [Shard("b", HALF, 2**128 - 1), Shard("a", 0, HALF - 1)]

    def put_records(self, records):
        self.calls.append(list(records))
        results = []
        for index, record in enumerate(records):
            if self.refuse(len(self.calls), index):
                results.append("ProvisionedThroughputExceededException")
            else:
                self.accepted["a" if int(record.explicit_hash_key) < HALF else "b"].append(record)
                results.append(None)
        return results


def events_of(records):
    return [user for r in records for user in kpl.deaggregate(r.data, r.partition_key)]


def producer(sink, dead=None):
    return Producer(sink, dead if dead is not None else [].append, backoff_seconds=0, max_backoff_seconds=0)


def test_events_are_aggregated_per_shard_and_keep_their_order():
    sink = FakeSink()
    p = producer(sink)
    sent = [(f"public.t/{i % 7}", f"event {i}".encode()) for i in range(100)]
    for key, data in sent:
        p.add(key, data)
    p.flush()
    assert len(sink.calls) == 1 and len(sink.calls[0]) == 2
    got = events_of(sink.accepted["a"]) + events_of(sink.accepted["b"])
    assert sorted(got) == sorted(sent)
    for shard in "ab":
        for key in {k for k, _ in events_of(sink.accepted[shard])}:
            got = [d for k, d in events_of(sink.accepted[shard]) if k == key]
            assert got == [d for k, d in sent if k == key]
    assert p.stats.events == 100 and p.stats.records == 2 and p.buffered_bytes == 0


def test_random_partial_failures_never_let_a_newer_event_overtake():
    rng = random.Random(7)
    sink = FakeSink(lambda call, index: rng.random() < 0.4)
    p = producer(sink)
    sent = []
    for round_ in range(20):
        for i in range(300):
            key = f"public.t/{i % 11}"
            data = f"{round_}:{i}".encode() + b"x" * 3000
            sent.append((key, data))
            p.add(key, data)
        p.flush()
    assert p.stats.retries > 0
    for shard in "ab":
        got = events_of(sink.accepted[shard])
        assert len(got) == len({d for _, d in got})  # refused records never landed: no duplicates
        for key in {k for k, _ in got}:
            assert [d for k, d in got if k == key] == [d for k, d in sent if k == key]


def test_records_stay_under_the_kinesis_limit():
    sink = FakeSink()
    p = producer(sink)
    big = b"x" * 300_000
    for i in range(10):
        p.add("public.t/1", big + bytes([i]))
    p.flush()
    records = sink.accepted["a"] + sink.accepted["b"]
    assert all(r.size <= MAX_RECORD_BYTES for r in records) and len(records) >= 4
    assert [d[-1] for _, d in events_of(records)] == list(range(10))


def test_an_event_too_big_to_share_goes_alone_and_one_too_big_to_send_is_dead_lettered():
    sink = FakeSink()
    dead = []
    p = producer(sink, lambda key, data, reason: dead.append((key, reason)))
    p.add("public.t/1", b"small")
    p.add("public.t/1", b"y" * (MAX_RECORD_BYTES - 40))
    p.add("public.t/1", b"z" * MAX_RECORD_BYTES)
    p.flush()
    records = sink.accepted["a"] + sink.accepted["b"]
    assert [r.events for r in records] == [1, 1]
    assert not kpl.is_aggregated(records[1].data) and records[1].data[:1] == b"y"
    assert dead and dead[0][0] == "public.t/1" and "exceeds the Kinesis record limit" in dead[0][1]
    assert p.stats.dead_lettered == 1


def test_calls_respect_the_batch_limits():
    record = Record("k", "0", b"x" * 10, 1)
    assert record.size == 11
    with pytest.raises(CaptureError, match="no open shards"):
        Producer(type("Empty", (), {"shards": lambda self: []})(), [].append)


def test_stop_interrupts_the_retry_wait():
    stop = threading.Event()
    stop.set()
    p = Producer(FakeSink(lambda call, index: True), [].append, stop)
    p.add("public.t/1", b"e")
    with pytest.raises(Stopped):
        p.flush()


def test_submitted_batches_are_sent_in_order_and_report_their_marker():
    calls = []
    sink = FakeSink(lambda call, index: call == 1)  # the first call fails: its batch is retried first
    p = producer(sink)
    for marker in (10, 20, 30):
        p.add("public.t/1", f"event {marker}".encode())
        p.submit(marker)
        calls.append(marker)
    p.flush()
    assert p.accepted == 30
    assert [d for _, d in events_of(sink.accepted["a"] + sink.accepted["b"])] == [
        b"event 10", b"event 20", b"event 30"]
    p.close()


def test_after_a_terminal_failure_nothing_more_is_sent():
    class Broken(FakeSink):
        def put_records(self, records):
            raise CaptureError("stream gone")

    p = producer(Broken())
    p.add("public.t/1", b"a")
    p.submit(10)
    with pytest.raises(CaptureError, match="stream gone"):
        p.flush()
    assert p.accepted is None


def test_checkpoint_moves_only_forward_and_only_to_completed_positions():
    checkpoint = Checkpoint(100)
    checkpoint.completed(90)
    assert checkpoint.completed_lsn == 100 and not checkpoint.accept(100) and checkpoint.acked == 100
    checkpoint.completed(200)
    assert checkpoint.acked == 100
    assert checkpoint.accept(200) and checkpoint.acked == 200
    assert not checkpoint.accept(150) and checkpoint.acked == 200
    with pytest.raises(ValueError, match="beyond"):
        checkpoint.accept(300)

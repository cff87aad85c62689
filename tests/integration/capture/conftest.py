"""Helpers for the capture integration tests: run capture, write to the source, read the stream."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from capture.config import CaptureConfig
from capture.kinesis import KinesisSink, S3DeadLetter
from capture.metrics import MetricsPublisher
from capture.producer import Record
from capture.service import CaptureService
from capture.state import LocalStateStore
from tests.conftest import query
from tests.integration.capture.lake import positioned, read_lake
from totes_cdc import kpl
from totes_cdc.contract import ChangeEvent, decode
from totes_cdc.lakefiles import ObjectStore
from totes_cdc.settings import settings

TABLES = ("design",)


def execute(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def seed_designs(dsn: str, count: int) -> None:
    """Designs whose name is their version number (0 here; every update adds one)."""
    execute(dsn, f"INSERT INTO design (design_name, file_location, file_name, last_updated) "
                 f"SELECT '0', '/d', 'f' || g, now() FROM generate_series(1, {count}) g")


def read_stream(stream: str | None = None) -> list[ChangeEvent]:
    """Every event on the stream: shard by shard, in stream order."""
    client = boto3.client("kinesis")
    stream = stream or settings()["stream"]["name"]
    events = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10000)
            for record in page["Records"]:
                users = kpl.deaggregate(record["Data"], record["PartitionKey"])
                events += [decode(data) for _, data in users]
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return events


def by_key(events: list[ChangeEvent], table: str = "design") -> dict[str, list[ChangeEvent]]:
    keyed: dict[str, list[ChangeEvent]] = defaultdict(list)
    for event in events:
        if event.table == table and event.op != "t":
            keyed[event.partition_key].append(event)
    return keyed


def dedupe(events: list[ChangeEvent]) -> list[ChangeEvent]:
    seen = set()
    out = []
    for event in events:
        if event.identity not in seen:
            seen.add(event.identity)
            out.append(event)
    return out


def assert_versions_exact(events: list[ChangeEvent], dsn: str, snapshot_repeats: bool = False) -> None:
    """Per design key, the versions seen are contiguous (no gap, no double) and end at the source's.

    ``snapshot_repeats``: a crash between putting a snapshot range's files and saving its progress
    reads those rows again in the resumed snapshot; each such read starts a new run of versions.
    The snapshot's reads are in the lake: they join ``events`` (the stream's), in position order.
    """
    source_rows = {str(k): v for k, v in query(dsn, "SELECT design_id, design_name FROM design")}
    keyed = by_key(positioned(read_lake() + events))
    for key, history in keyed.items():
        design_id = key.rsplit("/", 1)[1]
        versions = [int(e.after["design_name"]) for e in history if e.op != "d"]
        if not versions:  # a resumed snapshot sends deletes of rows it may have sent before
            assert design_id not in source_rows, (key, history)
            continue
        runs = [[]]
        for event in history:
            if event.op == "r" and runs[-1] and snapshot_repeats:
                runs.append([])
            if event.op != "d":
                runs[-1].append(int(event.after["design_name"]))
        for run in runs:
            assert run == list(range(run[0], run[0] + len(run))), (key, history)
        assert all(a[-1] <= b[0] for a, b in itertools.pairwise(runs)), (key, history)
        assert all(e.op in "rc" for e in history[:1]), (key, history[0])
        if history[-1].op == "d":
            assert design_id not in source_rows, key
        else:
            assert source_rows[design_id] == str(versions[-1]), key
    assert {f"public.design/{k}" for k in source_rows} <= set(keyed)


class Writer:
    """Concurrent source traffic on design: updates (version + 1), inserts and deletes."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.transactions = 0

    def _run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    cur.execute("UPDATE design SET design_name = (design_name::int + 1)::text "
                                "WHERE design_id IN (SELECT design_id FROM design ORDER BY random() LIMIT 3)")
                    if i % 5 == 0:
                        cur.execute("INSERT INTO design (design_name, file_location, file_name, "
                                    "last_updated) VALUES ('0', '/d', 'new', now())")
                    if i % 7 == 0:
                        cur.execute("DELETE FROM design WHERE design_id = "
                                    "(SELECT design_id FROM design ORDER BY random() LIMIT 1)")
                except psycopg2.OperationalError:
                    conn = psycopg2.connect(self.dsn)
                    conn.autocommit = True
                    cur = conn.cursor()
                self.transactions += 1
                time.sleep(0.002)
        conn.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def slot_caught_up(dsn: str, slot: str) -> Callable[[], bool]:
    """True once the slot has confirmed everything written so far (taken when first called)."""
    target = query(dsn, "SELECT pg_current_wal_lsn()")[0][0]

    def check() -> bool:
        rows = query(dsn, f"SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots "
                          f"WHERE slot_name = '{slot}'")
        return bool(rows and rows[0][0])
    return check


class FlakySink(KinesisSink):
    """The real Kinesis sink, failing chosen records of the first calls (as throttling would)."""

    def __init__(self, fail: Callable[[int, int], bool], after_calls: Callable[[int], None] | None = None):
        super().__init__(settings()["stream"]["name"])
        self.fail = fail
        self.calls = 0
        self.refused = 0
        self.after_calls = after_calls

    def put_records(self, records: list[Record]) -> list[str | None]:  # type: ignore[override]
        self.calls += 1
        failed = [i for i in range(len(records)) if self.fail(self.calls, i)]
        self.refused += len(failed)
        sent = [r for i, r in enumerate(records) if i not in failed]
        results = iter(super().put_records(sent) if sent else [])
        out = ["ProvisionedThroughputExceededException" if i in failed else next(results)
               for i in range(len(records))]
        if self.after_calls:
            self.after_calls(self.calls)
        return out


@pytest.fixture
def capture_factory(tmp_path: Path, aws: Any) -> Iterator[Callable[..., CaptureService]]:
    """Builds capture services (run them with ``start``); stops every one at the end."""
    started: list[tuple[CaptureService, threading.Thread]] = []
    slots: list[tuple[str, str]] = []

    def make(dsn: str, sink: KinesisSink | None = None, objects: ObjectStore | None = None,
             **overrides: Any) -> CaptureService:
        cfg = settings()
        overrides.setdefault("slot", f"test_{uuid.uuid4().hex[:10]}")
        slots.append((dsn, overrides["slot"]))
        config = CaptureConfig.from_settings(dsn, tmp_path, **{
            "tables": TABLES, "heartbeat_seconds": 0.5, "max_batch_delay_ms": 50,
            "snapshot_chunk_rows": 1000, "metrics_seconds": 0.5, "reconnect_max_seconds": 1.0,
            **overrides})
        return CaptureService(config, sink or KinesisSink(config.stream),
                              S3DeadLetter(cfg["buckets"]["dead_letter"],
                                           cfg["prefixes"]["dead_letter_records"]),
                              LocalStateStore(tmp_path, config.slot),
                              MetricsPublisher(tmp_path / "status" / "capture.json"), objects=objects)

    def start(service: CaptureService) -> threading.Thread:
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        started.append((service, thread))
        return thread

    make.start = start  # type: ignore[attr-defined]
    yield make
    for service, thread in started:
        service.stop.set()
        thread.join(timeout=30)
    for dsn, slot in slots:
        with contextlib.suppress(psycopg2.OperationalError):  # a server the test has stopped
            execute(dsn, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         f"WHERE slot_name = '{slot}' AND NOT active")

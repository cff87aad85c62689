"""Resumed and repeated snapshots against a real PostgreSQL: the lake's reads plus the stream,
applied in position order (as the warehouse's mirror does), end equal to the source, deletes
included. No stream filter is involved: Kinesis carries every change after the slot's point, and a
read at a later snapshot C2 sorts after the changes below C2 and before those above."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable

import boto3
import pytest

from capture.errors import Stopped
from capture.state import LocalStateStore, SnapshotState, StateStore
from tests.conftest import query
from tests.integration.capture.conftest import (
    Writer,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from tests.integration.capture.lake import markers, positioned, read_lake, snapshot_twins
from totes_cdc.contract import ChangeEvent
from totes_cdc.lakefiles import LakeLocation, ObjectStore, StoreError

pytestmark = pytest.mark.integration


class KilledBeforeSaving:
    """A state store whose process dies once ``ranges`` ranges of design are in the lake, just
    before the last of them is saved (other workers' files may be in the lake too, unsaved)."""

    def __init__(self, store: StateStore, ranges: int) -> None:
        self.store = store
        self.ranges = ranges

    def load(self) -> SnapshotState | None:
        return self.store.load()

    def save(self, state: SnapshotState) -> None:
        progress = state.tables.get("public.design")
        if progress is not None and len(progress.done) >= self.ranges:
            raise Stopped("killed between putting a range's files and saving its progress")
        self.store.save(state)


class KilledBeforeProcessedPut(ObjectStore):
    """An object store whose process dies putting the processed file of design's ``range``."""

    def __init__(self, range_index: int) -> None:
        super().__init__(boto3.client("s3"))
        self.suffix = f"-{range_index:06d}{LakeLocation.from_settings().processed_suffix}"

    def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        if "public.design/" in key and key.endswith(self.suffix):
            raise Stopped("killed between a range's raw put and its processed put")
        return super().put_new(bucket, key, body, content_type)


class FailingOnce(ObjectStore):
    """An object store whose first list and first read fail, as S3 may (throttling, a 500)."""

    def __init__(self) -> None:
        super().__init__(boto3.client("s3"))
        self.failed: list[str] = []

    def keys(self, bucket: str, prefix: str) -> list[str]:
        if "list" not in self.failed:
            self.failed.append("list")
            raise StoreError(f"cannot list s3://{bucket}/{prefix}: SlowDown")
        return super().keys(bucket, prefix)

    def get(self, bucket: str, key: str) -> bytes:
        if "read" not in self.failed:
            self.failed.append("read")
            raise StoreError(f"cannot read s3://{bucket}/{key}: InternalError")
        return super().get(bucket, key)


def same_reads(twins: list[tuple[list[ChangeEvent], list[dict[str, object]] | None]]) -> bool:
    """Every raw snapshot file has a processed twin with the same reads (positions and keys)."""
    return all(rows is not None and [(e.lsn, e.seq, int(e.after["design_id"])) for e in events]
               == [(r["_lsn"], r["_seq"], r["design_id"]) for r in rows]
               for events, rows in twins if events[0].table == "design")


def replay(events: Iterable[ChangeEvent]) -> dict[str, str | None]:
    """design_id → design_name after applying the events in position order."""
    rows: dict[str, str | None] = {}
    for event in positioned(list(events)):
        if event.table != "design" or event.op == "t":
            continue
        if event.before is not None:  # a delete, or an update that moves the key
            rows.pop(event.before["design_id"] or "", None)
        if event.after is not None:
            rows[event.after["design_id"] or ""] = event.after["design_name"]
    return rows


def source_designs(dsn: str) -> dict[str, str | None]:
    return {str(k): v for k, v in query(dsn, "SELECT design_id, design_name FROM design")}


def test_resumed_snapshot_delivers_deletes_of_rows_in_ranges_whose_progress_was_lost(
        totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 2000)
    execute(totesys_dsn, "ANALYZE design")
    first = capture_factory(totesys_dsn, snapshot_chunk_rows=100, snapshot_workers=2)
    first._store = KilledBeforeSaving(first._store, ranges=5)
    first.run()
    saved = first._store.load().tables["public.design"]
    assert 0 < len(saved.done) < len(saved.ranges) and not saved.complete
    execute(totesys_dsn,
            "DELETE FROM design WHERE design_id IN (50, 450, 451)",         # read at C1, saved or not
            "UPDATE design SET design_name = '1' WHERE design_id IN (90, 1200)",
            "UPDATE design SET design_id = 9000 WHERE design_id = 1300",    # key change in an unread range
            "UPDATE design SET design_id = 9001 WHERE design_id = 60",      # key change of a saved row
            "DELETE FROM design WHERE design_id = 1500")                    # never read at C1
    second = capture_factory(totesys_dsn, slot=first.config.slot, snapshot_chunk_rows=100,
                             snapshot_workers=2)
    capture_factory.start(second)
    wait_for(lambda: second._phase == "streaming", what="streaming")
    wait_for(slot_caught_up(totesys_dsn, second.config.slot), what="capture to catch up")
    lake, stream = read_lake(), read_stream()
    assert len({e.identity for e in stream}) == len(stream) and {e.op for e in stream} <= {"c", "u", "d"}
    assert len({e.lsn for e in lake}) == 2  # saved ranges read at C1, the rest at C2
    replayed = replay(lake + stream)
    assert {"50", "450", "451", "1300", "60", "1500"} & replayed.keys() == set()
    assert replayed == source_designs(totesys_dsn)
    [marker] = markers()
    assert marker.lsn == min(e.lsn for e in lake) and not marker.resync
    assert marker.rows == second._store.load().tables["public.design"].rows


def test_a_range_killed_between_its_raw_and_processed_puts_is_completed_from_its_raw_file(
        totesys_dsn, capture_factory):
    """The read at C1 of a range whose raw file is in the lake stands: the resumed snapshot writes
    its processed twin from the raw file instead of reading the range again at C2, so a row of it
    deleted after C1 keeps its read in both zones (and the loader, told only of processed files,
    gets every version the raw zone holds)."""
    seed_designs(totesys_dsn, 1000)
    execute(totesys_dsn, "ANALYZE design")
    first = capture_factory(totesys_dsn, objects=KilledBeforeProcessedPut(3), snapshot_chunk_rows=100,
                            snapshot_workers=1)
    first.run()
    saved = first._store.load()
    assert sorted(saved.tables["public.design"].done) == [0, 1, 2]
    [orphan] = [events for events, rows in snapshot_twins() if rows is None]
    deleted = [int(e.after["design_id"]) for e in orphan[::7]]
    execute(totesys_dsn, f"DELETE FROM design WHERE design_id IN ({', '.join(map(str, deleted))})")
    second = capture_factory(totesys_dsn, slot=first.config.slot, snapshot_chunk_rows=100,
                             snapshot_workers=1)
    capture_factory.start(second)
    wait_for(lambda: second._phase == "streaming", what="streaming")
    wait_for(slot_caught_up(totesys_dsn, second.config.slot), what="capture to catch up")
    twins = snapshot_twins()
    assert same_reads(twins)
    read_at_c1 = {int(e.after["design_id"]) for events, _ in twins for e in events if e.lsn == orphan[0].lsn}
    assert set(deleted) <= read_at_c1
    assert second._store.load().tables["public.design"].done[3].lsn == orphan[0].lsn
    replayed = replay(read_lake() + read_stream())
    assert set(map(str, deleted)) & replayed.keys() == set()
    assert replayed == source_designs(totesys_dsn)


def test_a_failed_list_or_read_of_the_raw_zone_while_completing_a_range_is_retried(
        totesys_dsn, capture_factory, caplog):
    """Completing a range from its raw file lists and reads the raw zone: when S3 fails either,
    the session ends with a warning naming the request, and the next one completes the range."""
    seed_designs(totesys_dsn, 1000)
    execute(totesys_dsn, "ANALYZE design")
    first = capture_factory(totesys_dsn, objects=KilledBeforeProcessedPut(3), snapshot_chunk_rows=100,
                            snapshot_workers=1)
    first.run()
    [orphan] = [events for events, rows in snapshot_twins() if rows is None]
    store = FailingOnce()
    second = capture_factory(totesys_dsn, slot=first.config.slot, objects=store, snapshot_chunk_rows=100,
                             snapshot_workers=1)
    capture_factory.start(second)
    wait_for(lambda: second._phase == "streaming", what="streaming")
    assert store.failed == ["list", "read"]
    assert "session failed (cannot list s3://" in caplog.text
    assert "session failed (cannot read s3://" in caplog.text
    assert same_reads(snapshot_twins())
    assert second._store.load().tables["public.design"].done[3].lsn == orphan[0].lsn


def test_full_re_read_after_lost_state_is_a_resync_and_delivers_deletes(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 60)
    first = capture_factory(totesys_dsn)
    thread = capture_factory.start(first)
    wait_for(lambda: first._phase == "streaming", what="streaming")
    first.stop.set()
    thread.join(timeout=30)
    execute(totesys_dsn,
            "DELETE FROM design WHERE design_id IN (3, 40)",
            "UPDATE design SET design_name = '1' WHERE design_id = 7",
            "UPDATE design SET design_id = 900 WHERE design_id = 8")
    first._store.path.unlink()  # the state is lost; the slot remains
    second = capture_factory(totesys_dsn, slot=first.config.slot)
    capture_factory.start(second)
    wait_for(lambda: second._phase == "streaming", what="streaming")
    wait_for(slot_caught_up(totesys_dsn, second.config.slot), what="capture to catch up")
    replayed = replay(read_lake() + read_stream())
    assert {"3", "40", "8"} & replayed.keys() == set()
    assert replayed == source_designs(totesys_dsn)
    assert sorted(m.resync for m in markers()) == [False, True]


def test_kill_9_at_random_points_of_a_parallel_snapshot_loses_nothing_deletes_included(
        totesys_dsn, aws_env, tmp_path):
    seed_designs(totesys_dsn, 20_000)
    execute(totesys_dsn, "ANALYZE design")
    slot = f"kill_{uuid.uuid4().hex[:8]}"
    overrides = json.dumps({"state_dir": str(tmp_path), "slot": slot, "tables": ["design"],
                            "snapshot_chunk_rows": 500, "snapshot_workers": 3,
                            "heartbeat_seconds": 0.5, "max_batch_delay_ms": 20})
    command = [sys.executable, "-m", "tests.integration.capture.run_capture", overrides]
    env = {**aws_env, "TOTES_CDC_SOURCE_DSN": totesys_dsn}
    store = LocalStateStore(tmp_path, slot)
    rng = random.Random()
    seen: list[tuple[int, float, int, int]] = []  # kill point: ranges done, delay, ranges saved, planned

    def ranges() -> tuple[int, int]:
        state = store.load()
        progress = state.tables.get("public.design") if state else None
        return (len(progress.done), len(progress.ranges)) if progress else (0, 0)

    try:
        with Writer(totesys_dsn) as writer:  # updates, inserts and deletes all along
            for target in sorted(rng.sample(range(1, 30), 3)):  # of about 40 ranges
                process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
                wait_for(lambda: ranges()[0] >= target, what="ranges to be read")
                # then somewhere in the next ranges' reads and puts (a few: a range takes milliseconds)
                delay = rng.uniform(0.0, 0.05)
                time.sleep(delay)
                process.kill()
                process.wait()
                seen.append((target, delay, *ranges()))
            process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
            wait_for(lambda: (s := store.load()) is not None and s.complete(["public.design"]),
                     what="the snapshot to complete")
            count = writer.transactions
            wait_for(lambda: writer.transactions > count + 50, what="source writes")
        wait_for(slot_caught_up(totesys_dsn, slot), what="capture to catch up")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        execute(totesys_dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    assert all(0 < done < planned for *_, done, planned in seen), seen  # killed mid-snapshot
    lake, stream = read_lake(), read_stream()
    assert {e.op for e in lake} == {"r"} and {e.op for e in stream} <= {"c", "u", "d"}
    assert "d" in {e.op for e in stream}
    assert replay(lake + stream) == source_designs(totesys_dsn), seen
    assert same_reads(snapshot_twins()), seen  # what the loader is told of is the raw zone

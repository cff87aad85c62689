"""Resumed and repeated snapshots against a real PostgreSQL: deletes reach a position-ordered consumer.

The consumer applies every event in (lsn, seq) order, as the warehouse's mirror does; it must end
equal to the source, with no row the source deleted.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from capture.errors import Stopped
from capture.state import SnapshotState, StateStore
from tests.conftest import query
from tests.integration.capture.conftest import (
    Writer,
    assert_versions_exact,
    dedupe,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from totes_cdc.contract import ChangeEvent

pytestmark = pytest.mark.integration


class KilledBeforeSaving:
    """A state store whose process dies once a snapshot chunk reaching ``rows`` is on the stream,
    just before that chunk's progress is saved."""

    def __init__(self, store: StateStore, rows: int) -> None:
        self.store = store
        self.rows = rows

    def load(self) -> SnapshotState | None:
        return self.store.load()

    def save(self, state: SnapshotState) -> None:
        if state.tables.get("public.design", None) and state.tables["public.design"].rows >= self.rows:
            raise Stopped("killed between putting a snapshot chunk and saving its progress")
        self.store.save(state)


def replay(events: Iterable[ChangeEvent]) -> dict[str, str | None]:
    """design_id → design_name after applying the events in position order."""
    rows: dict[str, str | None] = {}
    for event in sorted(dedupe(list(events)), key=lambda e: (e.lsn, e.seq)):
        if event.table != "design" or event.op == "t":
            continue
        if event.before is not None:  # a delete, or an update that moves the key
            rows.pop(event.before["design_id"] or "", None)
        if event.after is not None:
            rows[event.after["design_id"] or ""] = event.after["design_name"]
    return rows


def source_designs(dsn: str) -> dict[str, str | None]:
    return {str(k): v for k, v in query(dsn, "SELECT design_id, design_name FROM design")}


def test_resumed_snapshot_delivers_deletes_of_rows_in_the_chunk_whose_progress_was_lost(
        totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 200)
    first = capture_factory(totesys_dsn, snapshot_chunk_rows=40)
    first._store = KilledBeforeSaving(first._store, rows=120)
    first.run()  # rows 1..120 are on the stream; progress says 80
    assert first._store.load().tables["public.design"].last_key == ["80"]
    execute(totesys_dsn,
            "DELETE FROM design WHERE design_id IN (100, 101)",          # on the stream at C1, gone at C2
            "UPDATE design SET design_name = '1' WHERE design_id = 90",  # re-read at C2
            "UPDATE design SET design_id = 5000 WHERE design_id = 110",  # key moves within the re-read range
            "DELETE FROM design WHERE design_id = 150")                  # never read
    second = capture_factory(totesys_dsn, slot=first.config.slot, snapshot_chunk_rows=40)
    capture_factory.start(second)
    wait_for(lambda: second._phase == "streaming", what="streaming")
    wait_for(slot_caught_up(totesys_dsn, second.config.slot), what="capture to catch up")
    events = read_stream()
    assert len({e.identity for e in events}) == len(events)
    replayed = replay(events)
    assert {"100", "101", "110", "150"} & replayed.keys() == set()
    assert replayed == source_designs(totesys_dsn)


def test_killed_before_the_first_chunk_was_saved_the_re_read_is_not_followed_by_older_changes(
        totesys_dsn, capture_factory):
    """Regression: the table read again whole at C2 was taken for a C1 read, so its changes before
    C2 were sent too, after the C2 read that already holds them (versions doubled)."""
    seed_designs(totesys_dsn, 100)
    first = capture_factory(totesys_dsn, snapshot_chunk_rows=40)
    first._store = KilledBeforeSaving(first._store, rows=40)
    first.run()  # rows 1..40 are on the stream; no progress saved
    assert first._store.load().tables["public.design"].last_key is None
    execute(totesys_dsn, "UPDATE design SET design_name = '1' WHERE design_id IN (5, 60)")
    second = capture_factory(totesys_dsn, slot=first.config.slot, snapshot_chunk_rows=40)
    capture_factory.start(second)
    wait_for(lambda: second._phase == "streaming", what="streaming")
    wait_for(slot_caught_up(totesys_dsn, second.config.slot), what="capture to catch up")
    events = read_stream()
    assert [e.op for e in events if e.op in "cud"] == []
    assert_versions_exact(events, totesys_dsn, snapshot_repeats=True)
    assert replay(events) == source_designs(totesys_dsn)


def test_full_re_snapshot_after_lost_state_delivers_deletes(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 60)
    first = capture_factory(totesys_dsn)
    thread = capture_factory.start(first)
    wait_for(lambda: first._phase == "streaming", what="streaming")
    wait_for(slot_caught_up(totesys_dsn, first.config.slot), what="capture to catch up")
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
    replayed = replay(read_stream())
    assert {"3", "40", "8"} & replayed.keys() == set()
    assert replayed == source_designs(totesys_dsn)


def test_snapshot_killed_twice_before_saving_under_concurrent_deletes_ends_equal_to_the_source(
        totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 400)
    slot = None
    with Writer(totesys_dsn) as writer:  # updates, inserts and deletes all along
        for rows in (120, 280):
            killed = capture_factory(totesys_dsn, snapshot_chunk_rows=40, **({"slot": slot} if slot else {}))
            slot = killed.config.slot
            killed._store = KilledBeforeSaving(killed._store, rows=rows)
            killed.run()
            seen = writer.transactions
            wait_for(lambda: writer.transactions > seen + 20, what="source writes")
        last = capture_factory(totesys_dsn, slot=slot, snapshot_chunk_rows=40)
        capture_factory.start(last)
        wait_for(lambda: last._phase == "streaming", what="streaming")
        wait_for(lambda: writer.transactions > seen + 100, what="source writes")
    wait_for(slot_caught_up(totesys_dsn, slot), what="capture to catch up")
    events = read_stream()
    assert len({e.identity for e in events}) == len(events)
    assert replay(events) == source_designs(totesys_dsn)

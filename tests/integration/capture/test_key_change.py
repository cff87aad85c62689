"""An UPDATE that changes a primary key, against a real PostgreSQL: what the stream carries.

The old key's history must end (a delete, on the old key's shard) and the new key's begin (an
insert, on the new key's shard), at consecutive positions of the transaction, with the row's
TOAST-unchanged values wherever the source sends them.
"""

from __future__ import annotations

import pytest

from tests.integration.capture.conftest import (
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from totes_cdc.contract import ChangeEvent

pytestmark = pytest.mark.integration

BIG = "x" * 10_000  # stored out of line (STORAGE EXTERNAL): an UPDATE that keeps it sends it unchanged


def changes(events: list[ChangeEvent]) -> list[tuple[str, str, int, str]]:
    """(table, op, seq, partition key) of the streamed changes, in position order."""
    return sorted(((e.table, e.op, e.seq, e.partition_key) for e in events if not e.snapshot),
                  key=lambda c: c[2])


def test_primary_key_update_is_the_old_keys_delete_then_the_new_keys_insert(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 3)
    service = capture_factory(totesys_dsn)
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(totesys_dsn, "BEGIN; "
                         "UPDATE design SET design_id = 100, design_name = '1' WHERE design_id = 1; "
                         "UPDATE design SET design_name = '1' WHERE design_id = 2; "
                         "COMMIT")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    events = read_stream()

    assert changes(events) == [("design", "d", 1, "public.design/1"),
                               ("design", "c", 2, "public.design/100"),
                               ("design", "u", 3, "public.design/2")]
    gone, moved, _ = sorted((e for e in events if not e.snapshot), key=lambda e: e.seq)
    assert gone.before == {"design_id": "1"} and gone.after is None
    assert moved.before is None and moved.unchanged == ()
    assert moved.after is not None
    assert {k: moved.after[k] for k in ("design_id", "design_name", "file_name")} == {
        "design_id": "100", "design_name": "1", "file_name": "f1"}
    assert gone.lsn == moved.lsn and len({e.identity for e in events}) == len(events)


def test_toast_unchanged_columns_of_a_moved_row_are_filled_when_the_source_sends_the_old_row(
        totesys_dsn, capture_factory):
    """REPLICA IDENTITY FULL: the old row arrives whole (PostgreSQL inlines its TOASTed values), so
    the new key's insert carries every value. DEFAULT: only the old key arrives; the new key's insert
    lists the column as unchanged (its value is the old key's, as of the delete right before it)."""
    execute(totesys_dsn,
            "CREATE TABLE blob (id integer PRIMARY KEY, note text, body text)",
            "CREATE TABLE blob_full (id integer PRIMARY KEY, note text, body text)",
            "ALTER TABLE blob ALTER COLUMN body SET STORAGE EXTERNAL",
            "ALTER TABLE blob_full ALTER COLUMN body SET STORAGE EXTERNAL",
            "ALTER TABLE blob_full REPLICA IDENTITY FULL",
            f"INSERT INTO blob VALUES (1, 'a', '{BIG}')",
            f"INSERT INTO blob_full VALUES (1, 'a', '{BIG}')")
    service = capture_factory(totesys_dsn, tables=("blob", "blob_full"))
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(totesys_dsn, "UPDATE blob SET id = 2, note = 'b' WHERE id = 1",
            "UPDATE blob_full SET id = 2, note = 'b' WHERE id = 1")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    streamed = {(e.table, e.op): e for e in read_stream() if not e.snapshot}

    assert sorted(streamed) == [("blob", "c"), ("blob", "d"), ("blob_full", "c"), ("blob_full", "d")]
    assert streamed["blob", "d"].before == {"id": "1"}
    assert streamed["blob", "c"].after == {"id": "2", "note": "b"}
    assert streamed["blob", "c"].unchanged == ("body",)
    assert streamed["blob_full", "d"].before == {"id": "1", "note": "a", "body": BIG}
    assert streamed["blob_full", "c"].after == {"id": "2", "note": "b", "body": BIG}
    assert streamed["blob_full", "c"].unchanged == ()
    for table in ("blob", "blob_full"):
        gone, moved = streamed[table, "d"], streamed[table, "c"]
        assert (gone.lsn, gone.seq + 1) == (moved.lsn, moved.seq)
        assert (gone.partition_key, moved.partition_key) == (f"public.{table}/1", f"public.{table}/2")

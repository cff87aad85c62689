"""The resume filter never drops the delete of a row that may already be on the stream.

A resumed snapshot re-reads at C2 the chunk whose progress was not saved, though its rows were put
on the stream at C1; a full re-snapshot after lost state re-reads rows the stream already carried.
A row deleted before C2 is missing from the C2 read, so only the streamed delete can remove it.
"""

from __future__ import annotations

import datetime as dt

from capture.decoder import Begin, Delete, Insert, Relation, RelationColumn, Update
from capture.events import EventBuilder
from capture.snapshot import ResumeFilter
from capture.state import SnapshotState, TableProgress

TS = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
ID = RelationColumn(1, "id", 23, -1)
ITEM = Relation(1, "public", "item", "d", (ID, RelationColumn(0, "name", 25, -1)))
FULL = Relation(1, "public", "item", "f", (ID, RelationColumn(1, "name", 25, -1)))


class Catalog:
    def __init__(self, primary_key):
        self.primary_key = primary_key

    def describe(self, relation):
        return ["integer", "text"], self.primary_key


def changes(message, lsn=150, relation=ITEM, primary_key=("id",)):
    builder = EventBuilder(Catalog(primary_key))
    builder.relation(relation)
    builder.begin(Begin(lsn, TS, 1))
    return [event for event, _ in builder.change(message)]


def change(message, **kwargs):
    [event] = changes(message, **kwargs)
    return event


def resumed(*segments, key=True):
    """Progress of public.item: rows up to key 10 read at C1 = 100, the rest at C2 = 200."""
    progress = TableProgress(key_columns=["id"], key_types=["integer"], segments=list(segments)) if key \
        else TableProgress(segments=list(segments))
    return ResumeFilter(SnapshotState("s", 100, {"public.item": progress}))


INTERRUPTED = (None, 100), (["10"], 200)  # chunk 11..20 put on the stream at C1, progress not saved
LOST_STATE = ((None, 200),)  # state lost: every row read again at C2, the stream from before C2


def test_delete_of_a_row_of_the_unsaved_chunk_is_kept():
    delete = change(Delete(1, ("15", None), "K"))
    assert resumed(*INTERRUPTED).apply(delete) is delete


def test_delete_before_a_full_re_snapshot_after_lost_state_is_kept():
    delete = change(Delete(1, ("15", None), "K"))
    assert resumed(*LOST_STATE).apply(delete) is delete


def test_key_moving_within_the_re_read_range_deletes_its_old_key():
    f = resumed(*INTERRUPTED)
    gone, moved = changes(Update(1, ("50", "n"), ("15", None), "K"))  # capture: delete old, insert new
    assert f.apply(gone) is gone and gone.before == {"id": "15"} and (gone.lsn, gone.seq) == (150, 1)
    assert f.apply(moved) is None  # the C2 read holds key 50


def test_changes_the_re_read_holds_are_still_dropped():
    f = resumed(*INTERRUPTED)
    assert f.apply(change(Insert(1, ("15", "n")))) is None
    assert f.apply(change(Update(1, ("15", "n")))) is None
    # REPLICA IDENTITY FULL: an old image with the same key is no move, so no delete.
    assert f.apply(change(Update(1, ("15", "n"), ("15", "o"), "O"), relation=FULL)) is None


def test_table_without_key_keeps_deletes_and_deletes_the_old_image_of_an_update():
    f = resumed((None, 200), key=False)
    assert f.apply(change(Insert(1, ("1", "n")), relation=FULL, primary_key=None)) is None
    delete = change(Delete(1, ("1", "o"), "O"), relation=FULL, primary_key=None)
    assert f.apply(delete) is delete
    gone, moved = changes(Update(1, ("1", "n"), ("1", "o"), "O"), relation=FULL, primary_key=None)
    assert f.apply(gone) is gone and gone.before == {"id": "1", "name": "o"} and f.apply(moved) is None


def test_table_read_again_whole_after_a_crash_in_its_first_chunk_drops_what_the_read_holds():
    """Regression: killed before the first chunk's progress was saved, the table is read again from
    its first key at C2; changes before C2 were kept too, and sent after the C2 read."""
    f = resumed((None, 100), (None, 200))
    assert f.apply(change(Update(1, ("5", "n")))) is None
    later = change(Update(1, ("5", "n")), lsn=250)
    assert f.apply(later) is later

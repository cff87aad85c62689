"""Snapshot reads against stream changes: unique identities, and reads first at their LSN."""

from __future__ import annotations

import datetime as dt

import pytest

from capture.decoder import Begin, Insert, Relation, RelationColumn, Update
from capture.events import EventBuilder
from totes_cdc.contract import OP_SNAPSHOT, SEQ_RANGE, ChangeEvent, ContractError, snapshot_seq
from warehouse_loader.apply import TOMBSTONE_SEQ_FACTOR

TS = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
C = 0x1_5000_0000  # a snapshot's consistent point, where a commit record may start
RELATION = Relation(1, "public", "item", "d", (RelationColumn(1, "id", 23, -1),
                                               RelationColumn(0, "name", 25, -1)))


class Catalog:
    def describe(self, relation):
        return ["integer", "text"], ["id"]


def changes_committed_at_c():
    builder = EventBuilder(Catalog())
    builder.relation(RELATION)
    builder.begin(Begin(C, TS, 9))
    [(insert, _)] = builder.change(Insert(1, ("2", "new")))
    [(update, _)] = builder.change(Update(1, ("1", "changed")))
    return insert, update


def snapshot_read(ordinal, row_id):
    columns = changes_committed_at_c()[0].columns
    return ChangeEvent(OP_SNAPSHOT, "public", "item", C, snapshot_seq(ordinal), TS, columns,
                       after={"id": row_id, "name": "old"}, snapshot=True)


def test_a_snapshot_read_and_a_change_committed_at_its_lsn_have_distinct_identities():
    insert, update = changes_committed_at_c()
    reads = [snapshot_read(ordinal, str(ordinal)) for ordinal in (1, 2)]
    identities = [e.identity for e in (insert, update, *reads)]
    assert len(set(identities)) == len(identities), identities


def test_a_snapshot_read_sorts_before_an_update_committed_at_its_lsn():
    _, update = changes_committed_at_c()  # the update of row 1, second change of its transaction
    read = snapshot_read(5, "1")  # the same row, fifth in the snapshot: the update follows it
    assert (read.lsn, read.seq) < (update.lsn, update.seq)


def test_seq_ranges_of_reads_changes_and_tombstones_are_disjoint():
    assert TOMBSTONE_SEQ_FACTOR == SEQ_RANGE  # the loader's tombstones: -(truncate seq * 2^31 + row id)
    first, last = snapshot_seq(1), snapshot_seq(SEQ_RANGE - 1)
    highest_tombstone = -(1 * TOMBSTONE_SEQ_FACTOR + 0)  # first change of a transaction, row id 0
    assert highest_tombstone < first < last < 1
    for ordinal in (0, SEQ_RANGE):
        with pytest.raises(ContractError, match="outside"):
            snapshot_seq(ordinal)

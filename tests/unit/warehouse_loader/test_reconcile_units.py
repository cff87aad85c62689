"""reconcile.history's replay of a completed read's sweep: the ghost tombstones the loader gives."""

from __future__ import annotations

import datetime as dt

from totes_cdc.contract import GHOST_SEQ, OP_DELETE, OP_INSERT, OP_SNAPSHOT, snapshot_seq
from warehouse_loader.reconcile import history

AT = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
SWEPT_AT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def event(op: str, lsn: int, seq: int, row: int) -> dict[str, object]:
    image = {"id": str(row), "name": f"row {row}"}
    return {"op": op, "lsn": lsn, "seq": seq, "commit_ts": AT, "unchanged": [],
            "before": image if op == OP_DELETE else None, "after": None if op == OP_DELETE else image}


def test_a_sweep_tombstones_the_rows_its_read_did_not_see_as_the_loader_does() -> None:
    records = [event(OP_INSERT, 100, 1, 1),                 # not read at 200: a ghost
               event(OP_INSERT, 100, 2, 2), event(OP_SNAPSHOT, 200, snapshot_seq(1), 2),  # read
               event(OP_INSERT, 100, 3, 3), event(OP_DELETE, 250, 1, 3),  # its delete came after
               event(OP_INSERT, 100, 4, 5), event(OP_INSERT, 260, 1, 5),  # a ghost, inserted again
               event(OP_INSERT, 300, 1, 4)]                 # inserted after the read
    replay = history(records, "id", [(200, SWEPT_AT)])
    ghosts = [(v.key, v.values["name"]) for v in replay.versions
              if (v.op, v.lsn, v.seq, v.commit_ts) == (OP_DELETE, 200, GHOST_SEQ, SWEPT_AT)]
    assert ghosts == [("1", "row 1"), ("5", "row 5")]
    assert sorted(replay.current) == ["2", "4", "5"]
    assert history(records, "id").current.keys() == {"1", "2", "4", "5"}  # no sweep, no ghost

"""Snapshot reads and changes committed at the snapshot's LSN, in a real warehouse.

A transaction may start its commit record exactly at a snapshot's consistent point C: its changes
then carry lsn = C too. Every version must be kept (unique (source_lsn, source_seq)) and the reads
must come first, whatever order the files arrive in.
"""

from __future__ import annotations

import pytest

from tests.integration.warehouse_loader.files import event
from tests.integration.warehouse_loader.test_apply import load, query, sales_order
from totes_cdc.contract import SEQ_RANGE, snapshot_seq

pytestmark = pytest.mark.integration

C = 5000


@pytest.mark.parametrize("snapshot_first", [True, False])
def test_changes_committed_at_the_snapshot_lsn_follow_the_reads_and_drop_none(
        warehouse, totesys_columns, snapshot_first):
    reads = [event("r", C, snapshot_seq(ordinal), sales_order(i)) for ordinal, i in ((1, 2), (5, 1))]
    changes = [event("c", C, 1, sales_order(3)), event("u", C, 2, sales_order(1, units_sold="7"))]
    for rows in (reads, changes) if snapshot_first else (changes, reads):
        load(warehouse, totesys_columns, "sales_order", rows)

    assert query(warehouse, "SELECT count(*) FROM fact_sales_order") == [(4,)]
    assert query(warehouse, "SELECT sales_order_id, units_sold FROM fact_sales_order_current "
                            "ORDER BY 1") == [(1, 7), (2, 100), (3, 100)]
    assert query(warehouse, "SELECT sales_order_id, units_sold FROM mirror.sales_order "
                            "ORDER BY 1") == [(1, 7), (2, 100), (3, 100)]


@pytest.mark.parametrize("snapshot_first", [True, False])
def test_a_truncate_committed_at_the_snapshot_lsn_tombstones_the_reads(
        warehouse, totesys_columns, snapshot_first):
    reads = [event("r", C, snapshot_seq(ordinal), sales_order(ordinal)) for ordinal in (1, 2)]
    truncate = [event("t", C, 1)]
    for rows in (reads, truncate) if snapshot_first else (truncate, reads):
        load(warehouse, totesys_columns, "sales_order", rows)

    facts = query(warehouse, "SELECT source_op, source_seq, fact_version_seq(source_seq) "
                             "FROM fact_sales_order ORDER BY source_lsn, 3, sales_order_id")
    assert facts == [("r", 1 - SEQ_RANGE, 0), ("r", 2 - SEQ_RANGE, 0),
                     ("d", -(SEQ_RANGE + 1), 1), ("d", -(SEQ_RANGE + 2), 1)]
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order_current") == [(0,)]


def test_a_chunk_read_again_at_a_later_snapshot_with_the_same_ordinals_is_not_doubled(
        warehouse, totesys_columns):
    """Capture killed between putting a chunk and saving its progress reads it again at C2 with the
    same ordinals (so the same seqs): an unchanged row appends nothing, a changed one a version."""
    first = [event("r", C, snapshot_seq(81), sales_order(81)),
             event("r", C, snapshot_seq(82), sales_order(82))]
    again = [event("r", C + 100, snapshot_seq(81), sales_order(81)),
             event("r", C + 100, snapshot_seq(82), sales_order(82, units_sold="9"))]
    load(warehouse, totesys_columns, "sales_order", first)
    assert load(warehouse, totesys_columns, "sales_order", again).fact_rows_appended == 1
    assert query(warehouse, "SELECT sales_order_id, units_sold FROM fact_sales_order_current "
                            "ORDER BY 1") == [(81, 100), (82, 9)]

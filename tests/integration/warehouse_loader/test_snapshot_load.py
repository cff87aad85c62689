"""Snapshot reads written straight to the lake: files of reads loaded in bulk, completion markers,
resyncs that repair a warehouse (ghost rows tombstoned, missing rows read again) without adding
fact versions for rows that did not change."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extras import execute_values

from tests.integration.warehouse_loader.files import (
    event,
    object_key,
    parquet_bytes,
    snapshot_files,
    source_columns,
)
from tests.integration.warehouse_loader.test_apply import query, sales_order
from tests.integration.warehouse_loader.test_apply_order import (
    File,
    assert_order_does_not_matter,
    empty,
    state,
)
from tests.integration.warehouse_loader.test_apply_order import apply_all as apply_in_order
from tests.integration.warehouse_loader.test_current_state import assert_current_is_derived
from tests.integration.warehouse_loader.test_reconcile_history import small_seed
from totes_cdc.contract import GHOST_SEQ, snapshot_seq
from totes_cdc.snapshot_marker import SnapshotMarker
from totes_ops.stack import seed
from warehouse_loader import apply
from warehouse_loader.apply import apply_file
from warehouse_loader.derivation import FACTS
from warehouse_loader.migrate import migrate
from warehouse_loader.reconcile import reconcile

pytestmark = pytest.mark.integration

FACT_HISTORY = " UNION ALL ".join(
    f"SELECT '{f.table}', {f.key}, source_lsn, source_seq, source_op, is_deleted, "
    f"(to_jsonb(t) - 'loaded_at' - '{f.table.removeprefix('fact_').split('_')[0]}_record_id')::text "
    f"FROM {f.table} t" for f in FACTS)


def fact_history(conn: Any) -> set[tuple[Any, ...]]:
    """Every fact version: (fact, id, lsn, seq, op, deleted, values)."""
    return set(query(conn, FACT_HISTORY))


@pytest.fixture
def source(totesys_dsn: str) -> Any:
    """A small totesys source (the synthetic seed's first orders, every table present)."""
    conn = psycopg2.connect(totesys_dsn)
    with conn, conn.cursor() as cur:
        for table, rows in small_seed().items():
            execute_values(cur, sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, rows[0]))).as_string(cur),
                [tuple(row.values()) for row in rows])
    yield conn
    conn.close()


def apply_all(conn: Any, files: dict[str, bytes], order: list[str] | None = None) -> None:
    for key in order or list(files):
        apply_file(conn, key, files[key], fetch=files.__getitem__)


def test_snapshot_files_loaded_in_bulk_equal_the_row_by_row_apply(source, warehouse, warehouse_server,
                                                                   monkeypatch, bulk_checks):
    """The initial snapshot, a change, then a resync reading every row again (one row changed at
    the source with no event): in bulk (files of reads) and through the row-by-row path the
    warehouse is the same, every table, fact history included."""
    initial = snapshot_files(source, seed.LOAD_ORDER, lsn=1000, file_rows=160, markers=True)
    sold = {key: int(row(source, "sales_order", key)["units_sold"] or 0) for key in (1, 2)}
    update = event("u", 1500, 1, {**row(source, "sales_order", 1), "units_sold": "7"})
    change = {object_key("sales_order", 1500, 1500):
              parquet_bytes(source_columns(source, "sales_order"), [update])}
    with source, source.cursor() as cur:
        cur.execute("UPDATE sales_order SET units_sold = 7 WHERE sales_order_id = 1")
        cur.execute("UPDATE sales_order SET units_sold = 9 WHERE sales_order_id = 2")
    resync = snapshot_files(source, seed.LOAD_ORDER, lsn=3000, file_rows=160, markers=True, resync=True)
    files = {**initial, **change, **resync}

    apply_all(warehouse, files)
    in_bulk = state(warehouse)
    reads = [k for k in files if not k.endswith("-done.parquet") and k not in change]
    # every file of reads took the bulk path
    assert len([name for name, bulk in bulk_checks if bulk]) == len(reads)

    row_by_row = psycopg2.connect(warehouse_server.create_database("wh_row_by_row"))
    try:
        migrate(row_by_row)
        monkeypatch.setattr(apply, "is_snapshot_file", lambda table, spec: False)
        apply_all(row_by_row, files)
        assert {t: r for t, r in state(row_by_row).items() if r != in_bulk[t]} == {}
    finally:
        row_by_row.close()
    assert_current_is_derived(warehouse)
    # The resync's reads of unchanged rows are no versions: order 1 has its read and its update,
    # order 2 its read and the resync's read of the value changed with no event.
    assert query(warehouse, "SELECT sales_order_id, source_lsn, source_op, units_sold "
                            "FROM fact_sales_order WHERE sales_order_id IN (1, 2) ORDER BY 1, 2") == [
        (1, 1000, "r", sold[1]), (1, 1500, "u", 7), (2, 1000, "r", sold[2]), (2, 3000, "r", 9)]
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order WHERE source_lsn = 3000") == [(1,)]


def test_an_initial_load_keeps_its_reads_in_the_mirror_until_a_file_concerns_the_row(source, warehouse):
    """The reads of rows new to the warehouse are kept by their mirror rows, not written to the
    history as well (migration 025); a later change files the row's read in the history first,
    a truncate every read of its table, and the facts are what in-order application gives."""
    apply_all(warehouse, snapshot_files(source, ["sales_order"], lsn=1000, markers=True))
    orders = query(warehouse, "SELECT count(*) FROM mirror.sales_order")[0][0]
    assert orders > 1
    assert query(warehouse, "SELECT count(*) FROM mirror_history.sales_order") == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM mirror.sales_order WHERE pending_read_ts = ("
                            "SELECT min(commit_ts) FROM mirror._snapshot_files)") == [(orders,)]

    update = event("u", 1500, 1, {**row(source, "sales_order", 1), "units_sold": "7"})
    apply_file(warehouse, object_key("sales_order", 1500, 1500),
               parquet_bytes(source_columns(source, "sales_order"), [update]))
    assert query(warehouse, "SELECT sales_order_id, source_lsn, source_op FROM mirror_history.sales_order "
                            "ORDER BY 1, 2") == [(1, 1000, "r"), (1, 1500, "u")]
    assert query(warehouse, "SELECT units_sold, pending_read_ts FROM mirror.sales_order "
                            "WHERE sales_order_id = 1") == [(7, None)]

    apply_file(warehouse, object_key("sales_order", 2000, 2000), parquet_bytes((), [event("t", 2000, 1)]))
    assert query(warehouse, "SELECT count(*) FROM mirror_history.sales_order WHERE source_op = 'r'") == [
        (orders,)]
    assert query(warehouse, "SELECT count(*) FROM mirror.sales_order "
                            "WHERE NOT is_deleted OR pending_read_ts IS NOT NULL") == [(0,)]
    assert query(warehouse, "SELECT source_op, count(*) FROM fact_sales_order GROUP BY 1 ORDER BY 1") == [
        ("d", orders), ("r", orders), ("u", 1)]
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order_current") == [(0,)]
    assert_current_is_derived(warehouse)


def row(conn: Any, table: str, key: int) -> dict[str, str | None]:
    """A source row in text form, as change events carry it."""
    columns = source_columns(conn, table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns),
            sql.Identifier(table), sql.Identifier(columns[0].name)), (key,))
        values = cur.fetchone()
    conn.commit()
    return dict(zip([c.name for c in columns], values, strict=True))


def test_a_resync_repairs_rows_removed_and_ghost_rows_inserted_by_hand(source, totesys_dsn,
                                                                        warehouse_dsn, warehouse):
    """Rows removed from the warehouse by hand, rows deleted at the source while nothing listened
    and a row inserted into the warehouse by hand: a resync's files and markers, the markers
    first (they apply the files they list), leave reconcile with no difference; the fact history
    keeps every version it had, gains a read for each removed row and a tombstone for each ghost
    with its last values, and nothing for the rows that did not change."""
    apply_all(warehouse, snapshot_files(source, seed.LOAD_ORDER, lsn=1000, markers=True))
    # Removed by hand: an order and an address, every trace of them.
    query(warehouse, "DELETE FROM fact_sales_order WHERE sales_order_id = 3; "
                     "DELETE FROM mirror_history.sales_order WHERE sales_order_id = 3; "
                     "DELETE FROM mirror.sales_order WHERE sales_order_id = 3; "
                     "DELETE FROM mirror_history.address WHERE address_id = 4; "
                     "DELETE FROM mirror.address WHERE address_id = 4; SELECT 1")
    # Ghosts: deleted at the source with no event, and an order inserted into the warehouse by hand.
    with source, source.cursor() as cur:
        cur.execute("DELETE FROM payment WHERE payment_id = 5")
        cur.execute("DELETE FROM design WHERE design_id NOT IN (SELECT design_id FROM sales_order) "
                    "AND design_id % 100 = 7")
    ghost = {**row(source, "sales_order", 1), "sales_order_id": "900", "units_sold": "123"}
    apply_file(warehouse, object_key("sales_order", 1200, 1200),
               parquet_bytes(source_columns(source, "sales_order"), [event("c", 1200, 1, ghost)]))
    ghost_designs = [k for k, in query(warehouse, "SELECT design_id FROM mirror.design "
                                                  "WHERE design_id % 100 = 7 ORDER BY 1")]
    before = fact_history(warehouse)
    assert not reconcile(totesys_dsn, warehouse_dsn).ok

    resync = snapshot_files(source, seed.LOAD_ORDER, lsn=3000, file_rows=160, markers=True,
                            resync=True)
    markers = [k for k in resync if k.endswith("-done.parquet")]
    apply_all(warehouse, resync, markers + random.Random(4).sample(
        [k for k in resync if k not in markers], len(resync) - len(markers)))

    report = reconcile(totesys_dsn, warehouse_dsn)
    assert report.ok, [(t.table, t.missing, t.extra, t.different) for t in report.tables if t.differences]
    after = fact_history(warehouse)
    assert before <= after  # no version changed or lost
    assert sorted((f, i, lsn, seq, op, deleted) for f, i, lsn, seq, op, deleted, _ in after - before) == [
        ("fact_payment", 5, 3000, GHOST_SEQ, "d", True),
        ("fact_sales_order", 3, 3000, snapshot_seq(3), "r", False),
        ("fact_sales_order", 900, 3000, GHOST_SEQ, "d", True)]
    tombstone, = [values for f, i, *_, values in after - before if (f, i) == ("fact_sales_order", 900)]
    assert '"units_sold": 123' in tombstone  # the ghost's last values
    assert query(warehouse, "SELECT design_id, source_lsn, source_seq, is_deleted FROM mirror.design "
                            "WHERE design_id % 100 = 7 ORDER BY 1") == [
        (k, 3000, GHOST_SEQ, True) for k in ghost_designs] and ghost_designs
    assert query(warehouse, "SELECT source_table FROM mirror._ghost_sweeps WHERE source_lsn = 3000 "
                            "ORDER BY 1") == [(t,) for t in sorted(seed.LOAD_ORDER)]
    assert_current_is_derived(warehouse)
    # The markers again (a redelivery): nothing changes.
    expected = state(warehouse)
    apply_all(warehouse, resync, markers)
    assert state(warehouse) == expected


def test_a_resync_read_equal_to_the_version_below_it_adds_no_fact_version_in_any_order(
        warehouse, totesys_columns):
    """A resync re-reads every row: a read equal to the live version just below it (an update, a
    re-insert) is no new fact version, whichever file comes first."""
    read = sales_order(1)
    updated = sales_order(1, units_sold="7")
    files: list[File] = [("sales_order", [event("r", 1000, snapshot_seq(1), read)]),
                         ("sales_order", [event("u", 1500, 1, updated)]),
                         ("sales_order", [event("r", 3000, snapshot_seq(1), updated)])]
    assert_order_does_not_matter(warehouse, totesys_columns, files)
    apply_in_order(warehouse, totesys_columns, files, (2, 0, 1))
    assert query(warehouse, "SELECT source_lsn, source_op FROM fact_sales_order ORDER BY 1") == [
        (1000, "r"), (1500, "u")]
    empty(warehouse)
    files = [("sales_order", [event("r", 1000, snapshot_seq(1), read)]),
             ("sales_order", [event("d", 1500, 1, {"sales_order_id": "1"})]),
             ("sales_order", [event("c", 1600, 1, read)]),
             ("sales_order", [event("r", 3000, snapshot_seq(1), read)])]
    apply_in_order(warehouse, totesys_columns, files, (3, 2, 1, 0))
    assert query(warehouse, "SELECT source_lsn, source_op FROM fact_sales_order ORDER BY 1") == [
        (1000, "r"), (1500, "d"), (1600, "c")]  # the re-read equals the re-insert


def test_ghost_tombstones_are_what_the_completed_read_calls_for_in_any_order(
        warehouse, totesys_columns):
    """Order 1 is read again; order 2 was deleted with an event that arrives late; order 3 was
    inserted, then deleted while nothing listened. In any order
    (the marker before the files below it, or before the read it completes) only order 3 ends
    with a ghost tombstone, and order 2 has one deletion."""
    files: list[File] = [
        ("sales_order", [event("r", 1000, snapshot_seq(1), sales_order(1)),
                         event("r", 1000, snapshot_seq(2), sales_order(2))]),
        ("sales_order", [event("d", 2000, 1, {"sales_order_id": "2"})]),
        ("sales_order", [event("c", 2500, 1, sales_order(3))]),
        ("sales_order", [event("r", 3000, snapshot_seq(1), sales_order(1))]),
        ("sales_order", SnapshotMarker("public", "sales_order", 3000,
                                       (object_key("sales_order", 3, 3),), 1, True)),
    ]
    assert_order_does_not_matter(warehouse, totesys_columns, files)
    apply_in_order(warehouse, totesys_columns, files, tuple(range(len(files))))
    assert query(warehouse, "SELECT sales_order_id, source_lsn, source_seq, source_op "
                            "FROM fact_sales_order WHERE source_op = 'd' ORDER BY 1") == [
        (2, 2000, 1, "d"), (3, 3000, GHOST_SEQ, "d")]
    assert query(warehouse, "SELECT sales_order_id FROM fact_sales_order_current") == [(1,)]


def test_two_resyncs_over_a_lost_delete_tombstone_it_once_whichever_marker_comes_first(source, warehouse):
    """An order deleted at the source while nothing listened, then two resyncs: the first read
    that missed it tombstones it, once, whatever order the files and markers arrive in."""
    tables = ["sales_order"]
    files = snapshot_files(source, tables, lsn=1000, markers=True)
    with source, source.cursor() as cur:
        cur.execute("DELETE FROM sales_order WHERE sales_order_id = 2")
    for lsn in (2000, 3000):
        files |= snapshot_files(source, tables, lsn=lsn, markers=True, resync=True)
    keys = list(files)
    states = []
    for order_seed in range(4):
        empty(warehouse)
        apply_all(warehouse, files, random.Random(order_seed).sample(keys, len(keys)))
        assert query(warehouse, "SELECT source_lsn, source_seq, source_op FROM fact_sales_order "
                                "WHERE sales_order_id = 2 ORDER BY 1") == [
            (1000, snapshot_seq(2), "r"), (2000, GHOST_SEQ, "d")]
        states.append(state(warehouse))
    assert all(s == states[0] for s in states)


def test_a_row_inserted_by_hand_below_an_earlier_resync_is_tombstoned_by_the_next(source, warehouse,
                                                                                  caplog):
    """A ghost row put into the mirror by hand with a position below a resync that was already
    swept: the next resync tombstones it once (at the first read that missed it) and says so."""
    tables = ["sales_order"]
    apply_all(warehouse, snapshot_files(source, tables, lsn=1000, markers=True))
    apply_all(warehouse, snapshot_files(source, tables, lsn=2000, markers=True, resync=True))
    overlay = {"sales_order_id": 900, "source_lsn": 1500, "source_seq": 1}
    for table, extra in (("mirror.sales_order", {}), ("mirror_history.sales_order", {"source_op": "c"})):
        with warehouse, warehouse.cursor() as cur:
            cur.execute(f"INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, "  # nosec B608
                        f"to_jsonb(m) || %s::jsonb)).* FROM {table} m WHERE sales_order_id = 1 "
                        "ORDER BY source_lsn DESC LIMIT 1", (json.dumps({**overlay, **extra}),))
    with caplog.at_level(logging.INFO, logger="warehouse_loader.apply"):
        apply_all(warehouse, snapshot_files(source, tables, lsn=3000, markers=True, resync=True))
    assert "0 applied by the marker): 1 ghost rows tombstoned" in caplog.text
    assert query(warehouse, "SELECT source_lsn, source_seq, source_op FROM mirror_history.sales_order "
                            "WHERE sales_order_id = 900 ORDER BY 1") == [
        (1500, 1, "c"), (2000, GHOST_SEQ, "d")]
    assert query(warehouse, "SELECT source_lsn, source_op FROM fact_sales_order "
                            "WHERE sales_order_id = 900") == [(2000, "d")]
    assert query(warehouse, "SELECT is_deleted FROM mirror.sales_order "
                            "WHERE sales_order_id = 900") == [(True,)]

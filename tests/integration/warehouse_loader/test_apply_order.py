"""Files applied out of order and concurrently end in the same warehouse as in-order application."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg2
import pytest

from tests.integration.warehouse_loader.files import event, object_key, parquet_bytes, snapshot_key
from tests.integration.warehouse_loader.test_apply import design, payment, query, sales_order
from tests.integration.warehouse_loader.test_current_state import assert_current_is_derived
from totes_cdc.contract import snapshot_seq
from totes_cdc.snapshot_marker import SnapshotMarker, marker_parquet
from warehouse_loader.apply import apply_file
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration

File = tuple[str, list[dict[str, Any]] | SnapshotMarker]  # (source table, processed rows or marker)
TABLES = ("SELECT table_schema, table_name FROM information_schema.tables "
          "WHERE table_schema IN ('mirror', 'mirror_history', 'public') AND table_type = 'BASE TABLE' "
          "AND table_name <> 'schema_migrations' ORDER BY 1, 2")
# Columns whose values depend on when a row was written, not on what the warehouse holds; and
# whether a row's snapshot read is kept by its mirror row or filed in its history already (which
# depends on the files that came after it, and on replays: the history read below has both).
IGNORED = ("loaded_at", "sales_record_id", "purchase_record_id", "payment_record_id", "applied_at",
           "swept_at", "pending_read_ts")


def state(conn: Any) -> dict[str, list[str]]:
    """Every row of the warehouse's tables as JSON (sorted, without the load-time columns); the
    row histories with the reads their mirror rows keep for them (migration 025)."""
    ignored = " ".join(f"- '{c}'" for c in IGNORED)
    found: dict[str, list[str]] = {f"{schema}.{table}": [] for schema, table in query(conn, TABLES)}
    histories = [name for name in found if name.startswith("mirror_history.")]
    for table, row in query(conn, " UNION ALL ".join([
            *(f"SELECT '{name}', (to_jsonb(t) {ignored})::text FROM {name} t" for name in found),
            *(f"SELECT '{name}', (to_jsonb(m) - 'is_deleted' {ignored} || jsonb_build_object("
              f"'source_op', 'r', 'source_commit_ts', m.pending_read_ts, 'unchanged', '[]'::jsonb))::text "
              f"FROM mirror.{name.split('.')[1]} m WHERE m.pending_read_ts IS NOT NULL"
              for name in histories)])):
        found[table].append(row)
    # a read both kept and filed (a replay files it again) is one version
    return {table: sorted(set(rows) if table in histories else rows) for table, rows in found.items()}


def empty(conn: Any) -> None:
    # One statement for every table: a table that triggers keep from another (a fact's current
    # table, the dashboard's sums) is not written again after it was emptied.
    query(conn, "TRUNCATE " + ", ".join(f"{schema}.{table}" for schema, table in query(conn, TABLES))
          + "; SELECT 1")


def apply_all(conn: Any, columns: dict[str, Any], files: list[File], order: tuple[int, ...]) -> None:
    """Apply ``files`` in ``order``; a file given as a SnapshotMarker is that completion marker,
    which may list the others by their index (file i's key is ``object_key(table, i, i)``)."""
    stored = {}
    for i, (table, rows) in enumerate(files):
        if isinstance(rows, SnapshotMarker):
            stored[snapshot_key(table, rows.lsn, "done")] = marker_parquet(rows, columns[table])
        else:  # truncate-only files carry the metadata columns alone, as the processor writes them
            cols = () if all(r["_op"] == "t" for r in rows) else columns[table]
            stored[object_key(table, i, i)] = parquet_bytes(cols, rows)
    keys = list(stored)
    for i in order:
        apply_file(conn, keys[i], stored[keys[i]], fetch=stored.__getitem__)


def assert_order_does_not_matter(conn: Any, columns: dict[str, Any], files: list[File]) -> None:
    """Orders of ``files`` (each listed in source order; every order of up to three files, eight
    of four) give the in-order warehouse (the facts' current tables included, and those are what
    the fact history derives), and applying every file again changes nothing."""
    apply_all(conn, columns, files, tuple(range(len(files))))
    assert_current_is_derived(conn)
    expected = state(conn)
    orders = list(itertools.permutations(range(len(files))))
    for order in orders[1::len(orders) // 8 or 1]:
        empty(conn)
        apply_all(conn, columns, files, order)
        found = state(conn)
        assert {t: r for t, r in found.items() if r != expected[t]} == {}, \
            f"files applied in the order {order}"
        apply_all(conn, columns, files, order[::-1])
        assert state(conn) == expected, f"files applied again after the order {order}"
    empty(conn)


def test_a_toast_unchanged_column_takes_its_value_as_of_its_position_in_any_order(
        warehouse, totesys_columns):
    """Regression: applied before the version it follows, an unchanged column took an older value."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("sales_order", [event("r", 100, 1, sales_order(1))]),
        ("sales_order", [event("u", 200, 1, sales_order(1, agreed_delivery_date="2024-12-01"))]),
        ("sales_order", [event("u", 300, 1, sales_order(1, units_sold="9", agreed_delivery_date=None),
                               unchanged=["agreed_delivery_date"])]),
    ])
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("design", [event("r", 100, 1, design(7, "Old"))]),
        ("design", [event("u", 200, 1, {**design(7, "New"), "file_name": "new.json"})]),
        ("design", [event("u", 300, 1, {**design(7, "Newest"), "file_name": None},
                          unchanged=["file_name"])]),
    ])


def test_a_delete_applied_before_its_insert_gets_the_values_of_the_insert(
        warehouse, totesys_columns):
    """Regression: a delete applied first left an all-NULL tombstone and all-NULL mirror row."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("payment", [event("c", 100, 1, payment(1))]),
        ("payment", [event("u", 200, 1, payment(1, paid="true"))]),
        ("payment", [event("d", 300, 1, {"payment_id": "1"})]),
    ])
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("design", [event("c", 100, 1, design(7))]),
        ("design", [event("d", 200, 1, {"design_id": "7"})]),
    ])


def test_truncate_tombstones_carry_the_values_as_of_the_truncate_in_any_order(
        warehouse, totesys_columns):
    """Regression: a version older than an applied truncate arrived late; the tombstone kept the
    values of the version before it."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("payment", [event("r", 100, 1, payment(1)), event("r", 100, 2, payment(2))]),
        ("payment", [event("u", 200, 1, payment(1, paid="true"))]),
        ("payment", [event("t", 300, 1)]),
        ("payment", [event("c", 400, 1, payment(1, payment_amount="1.00"))]),
    ])


def test_a_truncate_tombstones_only_rows_live_at_its_position_in_any_order(
        warehouse, totesys_columns):
    """A row deleted before a truncate, and two truncates in a row, get no tombstone of their own."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("sales_order", [event("r", 100, 1, sales_order(1)), event("r", 100, 2, sales_order(2))]),
        ("sales_order", [event("d", 200, 1, {"sales_order_id": "1"})]),
        ("sales_order", [event("t", 300, 1)]),
        ("sales_order", [event("t", 400, 1)]),
    ])


def test_a_delete_of_a_row_never_seen_leaves_no_current_row_and_no_dimension_row(
        warehouse, totesys_columns):
    apply_all(warehouse, totesys_columns, [("payment", [event("d", 300, 1, {"payment_id": "1"})]),
                                           ("design", [event("d", 300, 1, {"design_id": "7"})])],
              (0, 1))

    assert query(warehouse, "SELECT count(*) FROM fact_payment_current") == [(0,)]
    assert query(warehouse, "SELECT payment_id, is_deleted, payment_amount FROM mirror.payment") == [
        (1, True, None)]
    assert query(warehouse, "SELECT count(*) FROM dim_design") == [(0,)]


def test_a_snapshot_read_again_is_one_fact_in_any_order(warehouse, totesys_columns):
    """A resumed snapshot reads a chunk again at a new position: the earlier read is kept."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("sales_order", [event("r", 100, snapshot_seq(1), sales_order(1)),
                         event("r", 100, snapshot_seq(2), sales_order(2))]),
        ("sales_order", [event("r", 200, snapshot_seq(1), sales_order(1)),
                         event("r", 200, snapshot_seq(2), sales_order(2, units_sold="7"))]),
    ])
    apply_all(warehouse, totesys_columns, [("sales_order", [
        event("r", 200, snapshot_seq(1), sales_order(1)), event("r", 100, snapshot_seq(1),
                                                                sales_order(1))])], (0,))
    assert query(warehouse, "SELECT source_lsn FROM fact_sales_order") == [(100,)]


def test_a_file_of_reads_with_a_key_the_mirror_has_is_rolled_back_to_the_general_way_in_any_order(
        warehouse, totesys_columns, new_key_checks):
    """A file of an initial load inserts its mirror rows without ON CONFLICT while every key is
    new to the mirror; a key a live file brought first, or the file applied again, makes that
    insert fail, and the file takes the general way from before it: in any order, nothing doubled."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("sales_order", [event("r", 100, snapshot_seq(1), sales_order(1)),
                         event("r", 100, snapshot_seq(2), sales_order(2))]),
        ("sales_order", [event("u", 150, 1, sales_order(2, units_sold="7"))]),
        ("sales_order", [event("r", 100, snapshot_seq(3), sales_order(3))]),
    ])
    assert {all_new for _, all_new in new_key_checks} == {True, False}


def test_a_snapshot_read_after_a_delete_is_a_new_version_even_if_identical(
        warehouse, totesys_columns):
    """Regression: read at C1, deleted, re-inserted with the same values, read again at C2: the
    second read was taken for a repeat of the first and the row stayed deleted."""
    assert_order_does_not_matter(warehouse, totesys_columns, [
        ("sales_order", [event("r", 100, snapshot_seq(1), sales_order(1))]),
        ("sales_order", [event("d", 150, 1, {"sales_order_id": "1"})]),
        ("sales_order", [event("r", 200, snapshot_seq(1), sales_order(1))]),
    ])
    apply_all(warehouse, totesys_columns, [
        ("sales_order", [event("r", 100, snapshot_seq(1), sales_order(1))]),
        ("sales_order", [event("d", 150, 1, {"sales_order_id": "1"})]),
        ("sales_order", [event("r", 200, snapshot_seq(1), sales_order(1))])], (0, 1, 2))
    assert query(warehouse, "SELECT sales_order_id, source_lsn FROM fact_sales_order_current") == [
        (1, 200)]


def test_versions_of_two_rows_at_one_position_are_both_facts(warehouse, totesys_columns):
    """Regression: facts were unique on the position alone, so of two rows' versions sharing one
    (a delete of an old key at the position of the update that set the new key, as capture once
    planned to send a key change), the second applied was dropped, whichever it was."""
    files: list[File] = [
        ("payment", [event("r", 100, snapshot_seq(1), payment(1))]),
        ("payment", [event("u", 200, 1, payment(2))]),
        ("payment", [event("d", 200, 1, {"payment_id": "1"})]),
    ]
    assert_order_does_not_matter(warehouse, totesys_columns, files)
    apply_all(warehouse, totesys_columns, files, (0, 1, 2))
    assert query(warehouse, "SELECT payment_id, source_op, payment_amount::text FROM fact_payment "
                            "ORDER BY source_lsn, payment_id") == [
        (1, "r", "56925.44"), (1, "d", "56925.44"), (2, "u", "56925.44")]
    assert query(warehouse, "SELECT payment_id FROM fact_payment_current") == [(2,)]


def test_rows_loaded_before_the_history_existed_are_its_first_versions(
        warehouse_dsn, totesys_columns, monkeypatch):
    """A warehouse upgraded through migration 004: what the mirror held is each row's first known
    version; later files resolve from it, and an older version arriving late adds its own fact
    only."""
    import warehouse_loader.migrate as migrations

    every = migrations.available()
    monkeypatch.setattr(migrations, "available", lambda: [m for m in every if m.version < 4])
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    # As the loader before 004 left them: payment 2 truncated at (300, 1), payment 1 inserted later.
    columns = ", ".join(payment(1))
    values = ", ".join(["%s"] * len(payment(1)))
    with conn, conn.cursor() as cur:
        for row, position, deleted in ((payment(1), (350, 1), False),
                                       (payment(2, paid="true"), (300, 1), True)):
            cur.execute(f"INSERT INTO mirror.payment ({columns}, source_lsn, source_seq, is_deleted) "
                        f"VALUES ({values}, %s, %s, %s)", (*row.values(), *position, deleted))
        cur.execute("INSERT INTO mirror._truncations VALUES ('payment', 300, 1, now())")
    monkeypatch.setattr(migrations, "available", lambda: every)
    migrate(conn)
    assert query(conn, "SELECT payment_id, source_op, unchanged, paid FROM mirror_history.payment "
                       "ORDER BY 1") == [(1, "c", [], False), (2, "d", [], True)]

    apply_all(conn, totesys_columns, [("payment", [event("d", 400, 1, {"payment_id": "1"})]),
                                      ("payment", [event("c", 50, 1, payment(2))])], (0, 1))

    assert query(conn, "SELECT payment_id, source_op, source_lsn, paid FROM fact_payment "
                       "ORDER BY 1, 3") == [(1, "d", 400, False), (2, "c", 50, False)]
    assert query(conn, "SELECT payment_id, is_deleted, source_lsn, paid FROM mirror.payment "
                       "ORDER BY 1") == [(1, True, 400, False), (2, True, 300, True)]
    conn.close()

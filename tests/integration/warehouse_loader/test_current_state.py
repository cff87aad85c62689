"""The facts' current state is a table kept with the fact history (migration 007): reading it costs
what the current rows cost, and it is always what the history derives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from tests.integration.warehouse_loader.files import event
from tests.integration.warehouse_loader.test_apply import load, payment, query, sales_order
from warehouse_loader import migrate as migrate_module
from warehouse_loader.derivation import FACTS, Fact
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration

ORDERS = 3000


def derived(conn: Any, fact: Fact) -> list[tuple[Any, ...]]:
    """The current state as the views before migration 007 derived it from the whole history."""
    return query(conn, sql.SQL(
        "SELECT * FROM (SELECT DISTINCT ON ({key}) * FROM {fact} "
        "  ORDER BY {key}, source_lsn DESC, fact_version_seq(source_seq) DESC) latest "
        "WHERE NOT is_deleted ORDER BY {key}").format(
            key=sql.Identifier(fact.key), fact=sql.Identifier(fact.table)))


def current(conn: Any, fact: Fact) -> list[tuple[Any, ...]]:
    return query(conn, sql.SQL("SELECT * FROM {} ORDER BY {}").format(
        sql.Identifier(fact.current_view), sql.Identifier(fact.key)))


def assert_current_is_derived(conn: Any) -> None:
    """Each fact's current table holds exactly the latest non-deleted version of each source id."""
    for fact in FACTS:
        assert current(conn, fact) == derived(conn, fact), fact.current_view


def plan_nodes(conn: Any, statement: str) -> Iterator[dict[str, Any]]:
    """The nodes of the executed plan of ``statement``."""
    (plan,), = query(conn, sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(sql.SQL(statement)))
    found = plan if isinstance(plan, list) else json.loads(plan)
    pending = [found[0]["Plan"]]
    while pending:
        node = pending.pop()
        pending.extend(node.get("Plans", ()))
        yield node


@pytest.fixture
def orders(warehouse: Any, totesys_columns: dict[str, Any]) -> Any:
    """ORDERS orders in three versions each (snapshot read, two updates), every tenth deleted."""
    load(warehouse, totesys_columns, "sales_order",
         [event("r", 100, -i, sales_order(i)) for i in range(1, ORDERS + 1)])
    for lsn in (200, 300):
        load(warehouse, totesys_columns, "sales_order",
             [event("u", lsn, i, sales_order(i, units_sold=str(lsn))) for i in range(1, ORDERS + 1)])
    load(warehouse, totesys_columns, "sales_order",
         [event("d", 400, i, {"sales_order_id": str(i)}) for i in range(10, ORDERS + 1, 10)])
    with warehouse, warehouse.cursor() as cur:
        cur.execute("ANALYZE fact_sales_order, fact_sales_order_current")
    return warehouse


def test_a_point_lookup_reads_one_current_row_through_the_current_tables_key(orders):
    """Regression: the current view read every version of the order (DISTINCT ON over the history)."""
    nodes = list(plan_nodes(orders, "SELECT * FROM fact_sales_order_current WHERE sales_order_id = 1234"))
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name"), n["Actual Rows"])
             for n in nodes if "Relation Name" in n]
    assert scans == [("Index Scan", "fact_sales_order_current", "fact_sales_order_current_pkey", 1)]
    assert query(orders, "SELECT units_sold FROM fact_sales_order_current "
                         "WHERE sales_order_id = 1234") == [(300,)]


def test_counting_the_current_orders_reads_the_current_rows_only(orders):
    """Regression: count(*) of the current view read all four versions' rows of the history."""
    scanned = sum(n["Actual Rows"] * n.get("Actual Loops", 1) for n in plan_nodes(
        orders, "SELECT count(*) FROM fact_sales_order_current") if "Relation Name" in n)
    live = ORDERS - ORDERS // 10
    assert scanned == live
    assert query(orders, "SELECT count(*) FROM fact_sales_order") == [(3 * ORDERS + ORDERS // 10,)]
    assert_current_is_derived(orders)


def test_a_small_file_recomputes_its_current_rows_through_the_fact_index_without_statistics(
        warehouse, totesys_columns):
    """Regression: before the fact table had statistics (after a bulk load, until autovacuum
    analyses it), the current rows of a file of ten orders were recomputed from a hash join over
    every version in the history."""
    with warehouse, warehouse.cursor() as cur:
        cur.execute("ALTER TABLE fact_sales_order SET (autovacuum_enabled = false)")
    load(warehouse, totesys_columns, "sales_order",
         [event("r", 100, -i, sales_order(i)) for i in range(1, ORDERS + 1)])
    load(warehouse, totesys_columns, "sales_order",
         [event("u", 200, i, sales_order(i, units_sold="5")) for i in range(1, ORDERS + 1)])
    assert query(warehouse, "SELECT count(*) FROM pg_stats WHERE tablename = 'fact_sales_order'") == [
        (0,)]
    warehouse.notices = []
    with warehouse, warehouse.cursor() as cur:
        cur.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                    "SET auto_explain.log_nested_statements = on; "
                    "SET auto_explain.log_level = notice")
    load(warehouse, totesys_columns, "sales_order",
         [event("u", 300, i, sales_order(i, units_sold="6")) for i in range(1, 11)])
    plans = [n for n in warehouse.notices if "Query Text: INSERT INTO fact_sales_order_current" in n]
    # One recompute: the fact statement's inserts. Its update and delete change no row here, and
    # a statement that changes none recomputes nothing (migration 020).
    assert len(plans) == 1, warehouse.notices
    assert [p for p in plans if "Seq Scan on fact_sales_order " in p] == []
    assert query(warehouse, "SELECT count(*), sum(units_sold) FROM fact_sales_order_current") == [
        (ORDERS, 10 * 6 + (ORDERS - 10) * 5)]
    assert_current_is_derived(warehouse)


def test_writes_to_the_history_by_hand_keep_the_current_state_derived(warehouse, totesys_columns):
    """A repair (update, delete, truncate and reload of a fact table) leaves the current tables what
    the history derives, in the repairing transaction."""
    load(warehouse, totesys_columns, "payment",
         [event("r", 100, -i, payment(i)) for i in range(1, 6)])
    load(warehouse, totesys_columns, "payment", [event("u", 200, 1, payment(1, paid="true")),
                                                  event("d", 200, 2, {"payment_id": "2"})])
    assert [r[0] for r in query(warehouse, "SELECT payment_id FROM fact_payment_current "
                                           "ORDER BY 1")] == [1, 3, 4, 5]
    for repair in ("UPDATE fact_payment SET is_deleted = false WHERE payment_id = 2 AND source_op = 'd'",
                   "UPDATE fact_payment SET payment_amount = 1 WHERE payment_id = 3",
                   "DELETE FROM fact_payment WHERE payment_id = 1 AND source_op = 'u'",
                   "DELETE FROM fact_payment WHERE payment_id = 4",
                   "CREATE TEMP TABLE kept AS SELECT * FROM fact_payment; TRUNCATE fact_payment",
                   "INSERT INTO fact_payment OVERRIDING SYSTEM VALUE SELECT * FROM kept"):
        with warehouse, warehouse.cursor() as cur:
            cur.execute(repair)
        assert_current_is_derived(warehouse)
    assert query(warehouse, "SELECT payment_id, payment_amount = 1 FROM fact_payment_current "
                            "ORDER BY 1") == [(1, False), (2, False), (3, True), (5, False)]


def test_the_migration_fills_the_current_tables_from_the_history(
        warehouse_dsn, totesys_columns, monkeypatch):
    """A warehouse loaded before migration 007 has the same current state after it."""
    every = migrate_module.available()
    # The loader of today needs the tables of snapshot reads (migration 019) to apply any file, the
    # facts' version index its conflict target names (024) and the mirror's reads kept (025).
    before_007 = [m for m in every if m.version < 7 or m.name in (
        "snapshot_reads", "fact_one_version_index", "mirror_pending_reads")]
    monkeypatch.setattr(migrate_module, "available", lambda: before_007)
    conn = psycopg2.connect(warehouse_dsn)
    try:
        migrate(conn)
        load(conn, totesys_columns, "sales_order", [event("r", 100, -i, sales_order(i))
                                                    for i in range(1, 4)])
        load(conn, totesys_columns, "sales_order", [event("u", 200, 1, sales_order(1, units_sold="5")),
                                                    event("d", 200, 2, {"sales_order_id": "2"})])
        before = query(conn, "SELECT * FROM fact_sales_order_current ORDER BY sales_order_id")
        monkeypatch.undo()
        assert [m.version for m in migrate(conn)] == [m.version for m in every
                                                      if m not in before_007]
        assert query(conn, "SELECT relkind::text FROM pg_class "
                           "WHERE relname = 'fact_sales_order_current'") == [("r",)]
        assert current(conn, FACTS[0]) == before
        assert query(conn, "SELECT sales_order_id, units_sold FROM fact_sales_order_current "
                           "ORDER BY 1") == [(1, 5), (3, 100)]
        assert_current_is_derived(conn)
    finally:
        conn.close()

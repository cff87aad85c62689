"""The dashboard's sales figures (``dashboard_sales``, kept by triggers) against the fact history.

The reference is the dashboard's grouped query run over the latest version of each order derived
from ``fact_sales_order`` itself (``DISTINCT ON`` over the whole history), not over the tables the
triggers keep: whatever the history went through, the two must be equal for every filter.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg2 import sql
from psycopg2.extras import execute_values

from dashboard import queries
from tests.integration.dashboard import warehouse_rows
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration

FROM_HISTORY = """(SELECT * FROM (
    SELECT DISTINCT ON (sales_order_id) * FROM public.fact_sales_order
    ORDER BY sales_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted) f"""

COLUMNS = ("sales_order_id", "created_date", "created_time", "sales_staff_id", "units_sold",
           "unit_price", "currency_id", "design_id", "agreed_delivery_location_id", "source_op",
           "source_lsn", "source_seq", "source_commit_ts", "is_deleted")
INSERT = sql.SQL("INSERT INTO fact_sales_order ({}) VALUES %s").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))


def _normalised(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows as the page shows them (no units or value is zero) in a stable order."""
    return sorted(((g, b, label, orders, int(units or 0), Decimal(value or 0))
                   for g, b, label, orders, units, value in rows), key=repr)


def _reference(conn: Any, filters: queries.Filters, today: date) -> list[tuple[Any, ...]]:
    where, params = filters.where(today)
    query = queries.SALES.replace("public.fact_sales_order_current f", FROM_HISTORY)
    with conn.cursor() as cur:
        cur.execute(sql.SQL(query).format(where=where), params)
        return _normalised(cur.fetchall())


def _all_filters() -> list[queries.Filters]:
    found = [queries.Filters(range=r, currency=c) for r in queries.RANGES
             for c in (None, *warehouse_rows.CURRENCIES.values())]
    found += [queries.Filters(country="Chile"), queries.Filters(design="Steel", range="365d"),
              queries.Filters(department="Sales", currency="GBP", range="30d")]
    return found


def assert_dashboard_equals_history(dsn: str, today: date) -> None:
    conn = psycopg2.connect(dsn)
    try:
        for filters in _all_filters():
            assert _normalised(queries.sales_rows(conn, filters, today)) == _reference(
                conn, filters, today), filters
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM dashboard_sales WHERE orders = 0")
            assert cur.fetchone() == (0,)  # emptied buckets are removed
    finally:
        conn.close()


class History:
    """Random fact versions of orders ``first`` to ``first + 24``, written the ways the loader
    writes them: appended (in and out of source order, several per statement), corrected in
    place, removed; and, when ``truncate``, now and then the whole history truncated."""

    def __init__(self, seed: int, today: date, first: int = 1, truncate: bool = True) -> None:
        self.random = random.Random(seed)
        self.today = today
        self.orders = (first, first + 24)
        self.truncate = truncate
        self.lsn = first * 1000

    def version(self) -> tuple[Any, ...]:
        r = self.random
        self.lsn += r.randint(1, 3)
        created = self.today - timedelta(days=r.choice((0, 0, 1, 3, 20, 45, 200, 400, 800)))
        op = r.choice("crud")
        return (r.randint(*self.orders), created, time(r.randrange(24), r.randrange(60)),
                r.choice((1, 2, None)), r.choice((1, 7, 250, None)), r.choice(("2.50", "3.99", None)),
                r.choice((1, 2, 3, 3, None, 9)), r.choice((1, 2, 3, None)),
                r.choice((1, 2, 3, None)), op, self.lsn * r.choice((1, 1, -1)) + 10**9,
                r.randint(1, 4), datetime.now(), op == "d")

    def step(self, cur: Any) -> None:
        r = self.random
        action = r.random()
        mine = sql.SQL("(SELECT sales_record_id FROM fact_sales_order WHERE sales_order_id "
                       "BETWEEN %s AND %s ORDER BY random() LIMIT 2)")
        if action < 0.6:
            execute_values(cur, INSERT.as_string(cur) + " ON CONFLICT DO NOTHING",
                           [self.version() for _ in range(r.randint(1, 6))])
        elif action < 0.8:
            cur.execute(sql.SQL("UPDATE fact_sales_order SET units_sold = %s, design_id = %s, "
                                "created_date = created_date - %s WHERE sales_record_id IN {}")
                        .format(mine), (r.choice((5, 60, None)), r.choice((1, 2, None)),
                                        r.randint(0, 40), *self.orders))
        elif action < 0.97 or not self.truncate:
            cur.execute(sql.SQL("DELETE FROM fact_sales_order WHERE sales_record_id IN {}")
                        .format(mine), self.orders)
        else:
            cur.execute("TRUNCATE fact_sales_order")


def test_dashboard_sales_equal_the_fact_history_after_random_changes(warehouse_dsn):
    warehouse_rows.create(warehouse_dsn)
    today = date.today()
    history = History(seed=15, today=today)
    conn = psycopg2.connect(warehouse_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT setseed(0.15)")
        for _ in range(150):
            history.step(cur)
        # Type 1 dimensions: a rename shows at once in the figures of every order that has it.
        cur.execute("UPDATE dim_design SET design_name = 'Canvas' WHERE design_id = 2")
        cur.execute("UPDATE dim_staff SET department_name = 'Finance' WHERE staff_id = 2")
        cur.execute("UPDATE dim_location SET country = 'Chile' WHERE location_id = 3")
    conn.close()
    assert_dashboard_equals_history(warehouse_dsn, today)


def test_the_rebuild_of_migration_010_gives_the_rows_the_triggers_keep(warehouse_dsn):
    """dashboard_sales_rebuild() (how migration 010 sums the orders already current, and the
    repair after a bulk load with the triggers off) agrees with the triggers, row for row."""
    warehouse_rows.create(warehouse_dsn)
    warehouse_rows.sample(warehouse_dsn)
    conn = psycopg2.connect(warehouse_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM dashboard_sales ORDER BY 1, 2, 3, 4, 5")
        kept = cur.fetchall()
        cur.execute("SELECT dashboard_sales_rebuild()")
        cur.execute("SELECT * FROM dashboard_sales ORDER BY 1, 2, 3, 4, 5")
        assert cur.fetchall() == kept
        cur.execute("SELECT DISTINCT sum(orders) FROM dashboard_sales GROUP BY resolution, grain")
        assert cur.fetchall() == [(6,)]
    conn.close()
    assert_dashboard_equals_history(warehouse_dsn, date.today())


def test_concurrent_writers_of_the_same_buckets_neither_deadlock_nor_lose_a_sum(warehouse_dsn):
    """Writers of one order each, in several statements per transaction (as a loader file's
    appends, corrections and removals are), all in today's buckets of the same currencies."""
    warehouse_rows.create(warehouse_dsn)
    today = date.today()
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        history = History(seed=worker, today=today, first=worker * 100, truncate=False)
        conn = psycopg2.connect(warehouse_dsn)
        try:
            for _ in range(15):
                with conn, conn.cursor() as cur:
                    for _ in range(3):
                        history.step(cur)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert_dashboard_equals_history(warehouse_dsn, today)


def test_an_unfiltered_refresh_reads_no_order_rows(warehouse_dsn):
    """What made a refresh take seconds with millions of orders: it read every current order.
    Run as a role that may read the summary and the dimensions only."""
    warehouse_rows.create(warehouse_dsn)
    warehouse_rows.sample(warehouse_dsn)
    role = sql.Identifier(f"summary_reader_{uuid.uuid4().hex[:8]}")
    conn = psycopg2.connect(warehouse_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
        try:
            cur.execute(sql.SQL("GRANT SELECT ON dashboard_sales, dim_currency, dim_location, "
                                "dim_design, dim_staff TO {}").format(role))
            cur.execute(sql.SQL("SET ROLE {}").format(role))
            for date_range in queries.RANGES:
                for currency in (None, "GBP"):
                    figures = queries.sales(conn, queries.Filters(currency=currency,
                                                                  range=date_range), date.today())
                    assert figures["totals"]["orders"] > 0 or date_range == "today"
        finally:
            cur.execute("RESET ROLE")
            cur.execute(sql.SQL("DROP OWNED BY {}").format(role))
            cur.execute(sql.SQL("DROP ROLE {}").format(role))
    conn.close()


def test_a_statement_that_changes_no_fact_holds_up_no_other_writer(warehouse_dsn):
    """The loader corrects a file's facts in statements that mostly change nothing (migration 020).
    Such statements, in a transaction left open as a long bulk load leaves it, must not hold up a
    new order of another transaction (its current row, the dashboard's sums); a statement that
    changes a fact does, to its commit, as migration 010 says."""
    warehouse_rows.create(warehouse_dsn)
    warehouse_rows.sample(warehouse_dsn)
    waiting = f"{warehouse_dsn} options='-c lock_timeout=3s'"
    long = psycopg2.connect(warehouse_dsn)
    try:
        with long.cursor() as cur:
            cur.execute("INSERT INTO fact_sales_order (sales_order_id) "
                        "SELECT sales_order_id FROM fact_sales_order WHERE false")
            cur.execute("UPDATE fact_sales_order SET units_sold = units_sold + 1 WHERE false")
            cur.execute("DELETE FROM fact_sales_order WHERE false")
        warehouse_rows.add_sale(waiting, 900)  # would fail on lock_timeout if held up
        with long.cursor() as cur:
            cur.execute("UPDATE fact_sales_order SET units_sold = units_sold + 1 "
                        "WHERE sales_order_id = 900")
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            warehouse_rows.add_sale(waiting, 901)
        long.commit()
    finally:
        long.close()
    warehouse_rows.add_sale(waiting, 901)
    assert_dashboard_equals_history(warehouse_dsn, date.today())


# What the sums of a set of signed current rows are, as migration 010 first wrote them: every
# order counted once in each of the twelve (resolution, grain) sets, nothing else.
SUMS_BY_DEFINITION = """
SELECT g.resolution, g.grain, g.bucket, r.currency_id, g.member_id, sum(r.sign)::bigint,
  coalesce(sum(r.sign * r.units_sold), 0)::bigint, coalesce(sum(r.sign * r.units_sold * r.unit_price), 0)
FROM (SELECT *, created_date + coalesce(created_time, time '00:00') AS at FROM ({changes}) c) r
CROSS JOIN LATERAL (VALUES
  ('hour', 'time', date_trunc('hour', r.at), NULL::integer),
  ('day', 'time', date_trunc('day', r.at), NULL), ('month', 'time', date_trunc('month', r.at), NULL),
  ('day', 'location', date_trunc('day', r.at), r.agreed_delivery_location_id),
  ('month', 'location', date_trunc('month', r.at), r.agreed_delivery_location_id),
  ('day', 'design', date_trunc('day', r.at), r.design_id),
  ('month', 'design', date_trunc('month', r.at), r.design_id),
  ('day', 'staff', date_trunc('day', r.at), r.sales_staff_id),
  ('month', 'staff', date_trunc('month', r.at), r.sales_staff_id),
  ('total', 'location', NULL, r.agreed_delivery_location_id),
  ('total', 'design', NULL, r.design_id), ('total', 'staff', NULL, r.sales_staff_id)
) g (resolution, grain, bucket, member_id)
GROUP BY 1, 2, 3, 4, 5"""
CHANGE_COLUMNS = ("sign", "created_date", "created_time", "currency_id", "units_sold", "unit_price",
                  "agreed_delivery_location_id", "design_id", "sales_staff_id")
CHANGE_TYPES = ("int", "date", "time", "int", "int", "numeric(10,2)", "int", "int", "int")


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


# Signed rows as the triggers pass them (+1 added, -1 removed), around month and day boundaries,
# with nulls in every column a fact row may leave null.
signed_rows = st.lists(st.tuples(
    st.sampled_from((1, -1)),
    _maybe(st.sampled_from((date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2), date(2025, 12, 31)))),
    _maybe(st.sampled_from((time(0, 0), time(0, 59), time(1, 0), time(23, 59, 59)))),
    _maybe(st.integers(1, 3)), _maybe(st.integers(-5, 500)),
    _maybe(st.decimals(min_value=-100, max_value=100, places=2)),
    _maybe(st.integers(1, 3)), _maybe(st.integers(1, 3)), _maybe(st.integers(1, 3))), max_size=40)


@pytest.fixture
def migrated(warehouse_dsn):
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    yield conn
    conn.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=signed_rows)
def test_the_triggers_sums_are_the_sums_by_definition(migrated, rows):
    """``dashboard_sales_rows`` (summed once per hour and member, then rolled up: migration 023)
    gives the rows and values of every order counted once in each of the twelve sets."""
    with migrated.cursor() as cur:
        typed = sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Identifier(name), sql.SQL(typ))
                                   for name, typ in zip(CHANGE_COLUMNS, CHANGE_TYPES, strict=True))
        values = sql.SQL("VALUES {}").format(sql.SQL(", ").join(
            sql.SQL(cur.mogrify("(" + ", ".join(["%s"] * len(CHANGE_COLUMNS)) + ")", row).decode())
            for row in rows)) if rows else sql.SQL("SELECT {} WHERE false").format(
            sql.SQL(", ").join([sql.SQL("NULL")] * len(CHANGE_COLUMNS)))
        changes = sql.SQL("SELECT {} FROM ({}) v ({})").format(
            typed, values, sql.SQL(", ").join(map(sql.Identifier, CHANGE_COLUMNS))).as_string(cur)
        cur.execute("SELECT dashboard_sales_rows(%s)", (changes,))
        cur.execute(cur.fetchone()[0])
        kept = sorted(cur.fetchall(), key=repr)
        cur.execute(SUMS_BY_DEFINITION.format(changes=changes))
        assert kept == sorted(cur.fetchall(), key=repr)
    migrated.rollback()

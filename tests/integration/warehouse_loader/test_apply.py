"""Applying processed files to a real warehouse: every derivation rule, replays, order, deletes."""

from __future__ import annotations

import datetime as dt
import logging
import re
from itertools import count
from typing import Any

import psycopg2
import pytest

from tests.integration.warehouse_loader.files import event, object_key, parquet_bytes
from warehouse_loader.apply import FileResult, apply_file
from warehouse_loader.errors import BadFileError, RetryableLoadError

pytestmark = pytest.mark.integration

TS = "2024-11-15 10:00:00.123"
_files = count(1)


def load(conn: Any, columns: dict[str, Any], table: str, rows: list[dict[str, Any]]) -> FileResult:
    n = next(_files)
    return apply_file(conn, object_key(table, n, n), parquet_bytes(columns[table], rows))


def query(conn: Any, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(text, params)
        rows = cur.fetchall()
    conn.commit()
    return rows


def address(i: int, **values: str | None) -> dict[str, str | None]:
    return {"address_id": str(i), "address_line_1": f"{i} High Street", "address_line_2": None,
            "district": None, "city": "Leeds", "postal_code": "LS1 1AA", "country": "UK",
            "phone": "0113 000000", "created_at": TS, "last_updated": TS, **values}


def counterparty(i: int, address_id: int) -> dict[str, str | None]:
    return {"counterparty_id": str(i), "counterparty_legal_name": "Leannon, Predovic and Morar",
            "legal_address_id": str(address_id), "commercial_contact": "A", "delivery_contact": "B",
            "created_at": TS, "last_updated": TS}


def department(i: int, name: str) -> dict[str, str | None]:
    return {"department_id": str(i), "department_name": name, "location": "Leds",
            "manager": "M", "created_at": TS, "last_updated": TS}


def staff(i: int, department_id: int) -> dict[str, str | None]:
    return {"staff_id": str(i), "first_name": "Jeremie", "last_name": "Franey",
            "department_id": str(department_id), "email_address": "j@example.com",
            "created_at": TS, "last_updated": TS}


def currency(i: int, code: str) -> dict[str, str | None]:
    return {"currency_id": str(i), "currency_code": code, "created_at": TS, "last_updated": TS}


def design(i: int, name: str = "Wooden") -> dict[str, str | None]:
    return {"design_id": str(i), "created_at": TS, "design_name": name, "file_location": "/lib",
            "file_name": "wooden.json", "last_updated": TS}


def sales_order(i: int, **values: str | None) -> dict[str, str | None]:
    return {"sales_order_id": str(i), "created_at": "2024-11-14 09:30:00", "last_updated": TS,
            "design_id": "7", "staff_id": "3", "counterparty_id": "2", "units_sold": "100",
            "unit_price": "2.43", "currency_id": "1", "agreed_delivery_date": "2024-11-20",
            "agreed_payment_date": "2024-11-22", "agreed_delivery_location_id": "4", **values}


def payment(i: int, **values: str | None) -> dict[str, str | None]:
    return {"payment_id": str(i), "created_at": TS, "last_updated": TS, "transaction_id": "1",
            "counterparty_id": "2", "payment_amount": "56925.44", "currency_id": "1",
            "payment_type_id": "3", "paid": "false", "payment_date": "2024-11-25",
            "company_ac_number": "52923196", "counterparty_ac_number": "32957646", **values}


def test_address_edit_updates_location_and_every_counterparty_at_it(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "address", [event("r", 100, 1, address(1)),
                                                 event("r", 100, 2, address(2))])
    load(warehouse, totesys_columns, "counterparty", [
        event("r", 100, 1, counterparty(10, 1)), event("r", 100, 2, counterparty(11, 1)),
        event("r", 100, 3, counterparty(12, 2))])

    load(warehouse, totesys_columns, "address",
         [event("u", 200, 1, address(1, city="York", district="North"))])

    assert query(warehouse, "SELECT location_id, city, district FROM dim_location ORDER BY 1") == [
        (1, "York", "North"), (2, "Leeds", None)]
    assert query(warehouse, "SELECT counterparty_id, counterparty_legal_city, "
                            "counterparty_legal_district, counterparty_legal_name "
                            "FROM dim_counterparty ORDER BY 1") == [
        (10, "York", "North", "Leannon, Predovic and Morar"),
        (11, "York", "North", "Leannon, Predovic and Morar"),
        (12, "Leeds", None, "Leannon, Predovic and Morar")]


def test_department_rename_updates_every_staff_member_in_it(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "department", [event("r", 100, 1, department(1, "Sales")),
                                                    event("r", 100, 2, department(2, "Finance"))])
    load(warehouse, totesys_columns, "staff", [event("r", 100, 1, staff(1, 1)),
                                               event("r", 100, 2, staff(2, 1)),
                                               event("r", 100, 3, staff(3, 2))])

    load(warehouse, totesys_columns, "department", [event("u", 300, 1, department(1, "Revenue"))])

    assert query(warehouse, "SELECT staff_id, department_name, location FROM dim_staff ORDER BY 1") \
        == [(1, "Revenue", "Leds"), (2, "Revenue", "Leds"), (3, "Finance", "Leds")]


def test_currency_names_come_from_iso_4217_and_unknown_codes_get_a_placeholder(
        warehouse, totesys_columns, caplog):
    with caplog.at_level(logging.WARNING, logger="warehouse_loader.apply"):
        load(warehouse, totesys_columns, "currency", [
            event("r", 100, 1, currency(1, "GBP")), event("c", 200, 1, currency(2, "JPY")),
            event("c", 200, 2, currency(3, "XYZ"))])

    assert query(warehouse, "SELECT * FROM dim_currency ORDER BY 1") == [
        (1, "GBP", "Pound Sterling"), (2, "JPY", "Yen"), (3, "XYZ", "Unknown currency (XYZ)")]
    assert "'XYZ'" in caplog.text and "not in ISO 4217" in caplog.text


def test_facts_extend_dim_date_to_every_referenced_date(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "sales_order", [event("r", 100, 1, sales_order(1))])
    load(warehouse, totesys_columns, "payment", [event("c", 200, 1, payment(1))])

    assert query(warehouse, "SELECT * FROM dim_date ORDER BY 1")[:1] == [
        (dt.date(2024, 11, 14), 2024, 11, 14, 4, "Thursday", "November", 4)]
    assert [str(r[0]) for r in query(warehouse, "SELECT date_id FROM dim_date ORDER BY 1")] == [
        "2024-11-14", "2024-11-15", "2024-11-20", "2024-11-22", "2024-11-25"]


def test_replayed_file_appends_nothing(warehouse, totesys_columns):
    data = parquet_bytes(totesys_columns["payment"], [
        event("r", 100, 1, payment(1)), event("u", 200, 1, payment(1, paid="true"))])
    first = apply_file(warehouse, object_key("payment", 1, 2), data)
    again = apply_file(warehouse, object_key("payment", 1, 2), data)

    assert (first.fact_rows_appended, again.fact_rows_appended) == (2, 0)
    assert first.latency_ms is not None and again.latency_ms is None
    assert query(warehouse, "SELECT count(*) FROM fact_payment") == [(2,)]
    assert query(warehouse, "SELECT paid FROM fact_payment_current") == [(True,)]


def test_out_of_order_files_leave_the_newest_version(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "design", [event("u", 300, 1, design(7, "Newest"))])
    load(warehouse, totesys_columns, "design", [event("u", 200, 1, design(7, "Older"))])
    load(warehouse, totesys_columns, "payment", [event("u", 300, 1, payment(1, paid="true"))])
    load(warehouse, totesys_columns, "payment", [event("c", 200, 1, payment(1))])

    assert query(warehouse, "SELECT design_name, source_lsn FROM mirror.design") == [("Newest", 300)]
    assert query(warehouse, "SELECT design_name FROM dim_design") == [("Newest",)]
    assert query(warehouse, "SELECT count(*) FROM fact_payment") == [(2,)]
    assert query(warehouse, "SELECT paid, source_lsn FROM fact_payment_current") == [(True, 300)]


def test_delete_appends_a_tombstone_with_the_last_known_values(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "sales_order", [event("r", 100, 1, sales_order(1)),
                                                     event("r", 100, 2, sales_order(2))])
    load(warehouse, totesys_columns, "sales_order", [
        event("u", 200, 1, sales_order(1, units_sold="5")),
        event("d", 200, 2, {"sales_order_id": "1"})])

    assert query(warehouse, "SELECT source_op, units_sold, unit_price::text, is_deleted "
                            "FROM fact_sales_order WHERE sales_order_id = 1 ORDER BY source_lsn, "
                            "source_seq") == [("r", 100, "2.43", False), ("u", 5, "2.43", False),
                                              ("d", 5, "2.43", True)]
    assert query(warehouse, "SELECT sales_order_id FROM fact_sales_order_current") == [(2,)]
    assert query(warehouse, "SELECT units_sold, is_deleted FROM mirror.sales_order "
                            "WHERE sales_order_id = 1") == [(5, True)]


def test_deleted_dimension_source_row_keeps_its_dimension_row(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "design", [event("r", 100, 1, design(7))])
    load(warehouse, totesys_columns, "design", [event("d", 200, 1, {"design_id": "7"})])

    assert query(warehouse, "SELECT design_id, design_name FROM dim_design") == [(7, "Wooden")]
    assert query(warehouse, "SELECT is_deleted FROM mirror.design") == [(True,)]


def test_toast_unchanged_columns_take_the_previous_version(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "sales_order", [event("r", 100, 1, sales_order(1))])
    load(warehouse, totesys_columns, "sales_order", [
        event("u", 200, 1, sales_order(1, units_sold="6", agreed_delivery_date=None),
              unchanged=["agreed_delivery_date"]),
        event("u", 200, 2, sales_order(2, agreed_delivery_date="2024-12-01")),
        event("u", 300, 1, sales_order(2, units_sold="9", agreed_delivery_date=None),
              unchanged=["agreed_delivery_date"])])

    assert [(r[0], r[1], str(r[2])) for r in query(
        warehouse, "SELECT sales_order_id, units_sold, agreed_delivery_date FROM fact_sales_order "
                   "ORDER BY source_lsn, source_seq")] == [
        (1, 100, "2024-11-20"), (1, 6, "2024-11-20"), (2, 100, "2024-12-01"), (2, 9, "2024-12-01")]


def test_truncate_marks_the_mirror_deleted_and_tombstones_current_facts(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "sales_order", [event("r", 100, 1, sales_order(1)),
                                                     event("r", 100, 2, sales_order(2))])
    result = load(warehouse, totesys_columns, "sales_order", [
        event("c", 200, 1, sales_order(3)), event("t", 200, 2),
        event("c", 200, 3, sales_order(4))])

    assert result.fact_rows_appended == 5  # two inserts, three tombstones
    assert query(warehouse, "SELECT sales_order_id FROM fact_sales_order_current") == [(4,)]
    assert query(warehouse, "SELECT sales_order_id, is_deleted FROM mirror.sales_order "
                            "ORDER BY 1") == [(1, True), (2, True), (3, True), (4, False)]
    load(warehouse, totesys_columns, "design", [event("r", 100, 1, design(7)), event("t", 150, 1)])
    assert query(warehouse, "SELECT is_deleted FROM mirror.design") == [(True,)]
    assert query(warehouse, "SELECT count(*) FROM dim_design") == [(1,)]


def test_a_row_older_than_a_truncate_applied_before_it_is_truncated_too(warehouse, totesys_columns):
    """Regression: an insert from another shard arrived after the truncate and stayed current."""
    load(warehouse, totesys_columns, "payment", [event("r", 100, 1, payment(1))])
    load(warehouse, totesys_columns, "payment", [event("t", 300, 1)])
    load(warehouse, totesys_columns, "payment", [event("c", 250, 1, payment(2))])
    load(warehouse, totesys_columns, "payment", [event("c", 350, 1, payment(3))])

    assert query(warehouse, "SELECT payment_id FROM fact_payment_current") == [(3,)]
    assert query(warehouse, "SELECT payment_id, is_deleted FROM mirror.payment ORDER BY 1") == [
        (1, True), (2, True), (3, False)]
    assert query(warehouse, "SELECT payment_id, source_op FROM fact_payment WHERE is_deleted "
                            "ORDER BY 1") == [(1, "d"), (2, "d")]


def test_a_snapshot_chunk_read_again_after_a_capture_crash_is_not_doubled(warehouse, totesys_columns):
    """A resumed snapshot re-reads a chunk at a new snapshot position: same values append nothing;
    a row that changed in between is a real new version."""
    load(warehouse, totesys_columns, "sales_order", [event("r", 100, 1, sales_order(1)),
                                                     event("r", 100, 2, sales_order(2))])
    changed = {**sales_order(2), "units_sold": "7"}
    result = load(warehouse, totesys_columns, "sales_order", [event("r", 500, 1, sales_order(1)),
                                                              event("r", 500, 2, changed)])

    assert result.fact_rows_appended == 1
    assert query(warehouse, "SELECT sales_order_id, units_sold FROM fact_sales_order_current "
                            "ORDER BY 1") == [(1, 100), (2, 7)]


def test_a_file_of_truncates_alone_carries_only_the_metadata_columns(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "payment", [event("r", 100, 1, payment(1))])
    apply_file(warehouse, object_key("payment", 9, 9), parquet_bytes((), [event("t", 200, 1)]))

    assert query(warehouse, "SELECT source_op, is_deleted, source_lsn FROM fact_payment "
                            "ORDER BY source_lsn") == [("r", False, 100), ("d", True, 200)]
    assert query(warehouse, "SELECT count(*) FROM fact_payment_current") == [(0,)]
    apply_file(warehouse, object_key("currency", 9, 9), parquet_bytes((), [event("t", 200, 1)]))


def test_fact_before_its_dimensions_loads_and_the_dimensions_fill_in_later(warehouse, totesys_columns):
    load(warehouse, totesys_columns, "sales_order", [event("c", 200, 1, sales_order(1))])
    load(warehouse, totesys_columns, "staff", [event("c", 150, 1, staff(3, 5))])
    assert query(warehouse, "SELECT department_name FROM dim_staff") == [(None,)]

    load(warehouse, totesys_columns, "design", [event("r", 100, 1, design(7))])
    load(warehouse, totesys_columns, "department", [event("r", 100, 1, department(5, "Sales"))])

    assert query(warehouse, "SELECT design_id FROM fact_sales_order_current "
                            "JOIN dim_design USING (design_id)") == [(7,)]
    assert query(warehouse, "SELECT department_name FROM dim_staff") == [("Sales",)]


@pytest.mark.parametrize(("change", "reason"), [
    (lambda cols, rows: (cols[:-1], rows), "column 'agreed_delivery_location_id' is missing"),
    (lambda cols, rows: ([c if c.name != "units_sold" else type(c)("units_sold", "text")
                          for c in cols], rows), "column 'units_sold' has type string"),
    (lambda cols, rows: (cols, [{**rows[0], "_op": "x"}]), "unknown operations in _op: ['x']"),
    (lambda cols, rows: (cols, [{**rows[0], "sales_order_id": None}]), "key column 'sales_order_id'"),
    (lambda cols, rows: (cols, [{**rows[0], "agreed_payment_date": "soon"}]),
     "the warehouse rejected its values"),
])
def test_files_that_break_the_contract_are_refused_with_the_reason(
        warehouse, totesys_columns, change, reason):
    columns, rows = change(list(totesys_columns["sales_order"]), [event("c", 1, 1, sales_order(1))])
    with pytest.raises(BadFileError, match="public.sales_order.*" + re.escape(reason)):
        apply_file(warehouse, object_key("sales_order", 1, 1), parquet_bytes(columns, rows))
    assert query(warehouse, "SELECT count(*) FROM mirror.sales_order") == [(0,)]


def test_unreadable_files_and_unknown_tables_are_refused(warehouse, totesys_columns):
    with pytest.raises(BadFileError, match="unreadable Parquet"):
        apply_file(warehouse, object_key("sales_order", 1, 1), b"not parquet")
    data = parquet_bytes(totesys_columns["design"], [event("r", 1, 1, design(1))])
    with pytest.raises(BadFileError, match=r"unknown table public\.invoice"):
        apply_file(warehouse, object_key("invoice", 1, 1), data)
    with pytest.raises(BadFileError, match="not a processed file"):
        apply_file(warehouse, "processed/other.design/x.parquet", data)


def test_a_lost_warehouse_connection_is_retryable(warehouse_dsn, warehouse, totesys_columns):
    conn = psycopg2.connect(warehouse_dsn)
    conn.close()
    with pytest.raises(RetryableLoadError, match=r"applying processed/public\.design"):
        load(conn, totesys_columns, "design", [event("r", 1, 1, design(1))])


def test_an_unmigrated_warehouse_makes_files_wait_not_dead_letter(warehouse_dsn, totesys_columns):
    conn = psycopg2.connect(warehouse_dsn)
    with pytest.raises(RetryableLoadError, match="warehouse is not migrated"):
        load(conn, totesys_columns, "design", [event("r", 1, 1, design(1))])
    conn.close()

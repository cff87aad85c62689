"""A small warehouse for the dashboard's tests: the real migrations, a few dimensions and sales."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

import psycopg2

from warehouse_loader.migrate import migrate

CURRENCIES = {1: "GBP", 2: "USD", 3: "EUR"}
COUNTRIES = {1: "Portugal", 2: "Chile", 3: "Norway"}
DESIGNS = {1: "Steel", 2: "Cotton", 3: "Steel"}
STAFF = {1: ("Alma", "Abbott", "Sales"), 2: ("Boris", "Bergstrom", "Purchasing")}
_positions = itertools.count(1000)


def create(dsn: str) -> None:
    """The warehouse schema (the loader's migrations) and the dimension rows sales point at."""
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn)
        with conn.cursor() as cur:
            for cid, code in CURRENCIES.items():
                cur.execute("INSERT INTO dim_currency VALUES (%s, %s, %s)", (cid, code, code))
            for lid, country in COUNTRIES.items():
                cur.execute("INSERT INTO dim_location (location_id, address_line_1, city, postal_code,"
                            " country, phone) VALUES (%s, 'x', 'y', 'z', %s, '0')", (lid, country))
            for did, name in DESIGNS.items():
                cur.execute("INSERT INTO dim_design VALUES (%s, %s, '/d', 'f.json')", (did, name))
            for sid, (first, last, department) in STAFF.items():
                cur.execute("INSERT INTO dim_staff VALUES (%s, %s, %s, %s, 'Leeds', 'e@x')",
                            (sid, first, last, department))
        conn.commit()
    finally:
        conn.close()


def add_sale(dsn: str, sales_order_id: int, *, currency_id: int = 1, units: int = 100,
             unit_price: str = "2.50", location_id: int = 1, design_id: int = 1, staff_id: int = 1,
             created: date | None = None, op: str = "c", latency: timedelta = timedelta(0)) -> None:
    """One committed fact_sales_order version, as the loader appends it."""
    created = created or date.today()
    lsn = next(_positions)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, "
                "last_updated_date, last_updated_time, sales_staff_id, counterparty_id, units_sold, "
                "unit_price, currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
                "agreed_delivery_location_id, source_op, source_lsn, source_seq, source_commit_ts, "
                "is_deleted) "
                "VALUES (%s, %s, '10:00', %s, '10:00', %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, "
                "clock_timestamp() - %s, %s)",
                (sales_order_id, created, created, staff_id, units, unit_price, currency_id,
                 design_id, created, created, location_id, op, lsn, latency, op == "d"))
        conn.commit()
    finally:
        conn.close()


def sample(dsn: str) -> int:
    """Six orders in three currencies, countries, two designs, two staff: five in the last 70 days
    and one 13 months ago. Returns how many calendar months have sales, which depends on today's
    date: on the first three days of a month, the orders of days before fall in the month before."""
    today = date.today()
    rows: list[dict[str, Any]] = [
        {"currency_id": 1, "units": 1000, "location_id": 1, "design_id": 1, "staff_id": 1,
         "created": today},
        {"currency_id": 2, "units": 2000, "location_id": 2, "design_id": 2, "staff_id": 2,
         "created": today - timedelta(days=40)},
        {"currency_id": 3, "units": 3000, "location_id": 3, "design_id": 3, "staff_id": 1,
         "created": today - timedelta(days=70)},
        {"currency_id": 1, "units": 400, "location_id": 2, "design_id": 2, "staff_id": 2,
         "created": today - timedelta(days=1)},
        {"currency_id": 2, "units": 500, "location_id": 1, "design_id": 1, "staff_id": 1,
         "created": today - timedelta(days=400)},
        {"currency_id": 3, "units": 600, "location_id": 3, "design_id": 3, "staff_id": 2,
         "created": today - timedelta(days=3)},
    ]
    for order_id, row in enumerate(rows, start=1):
        add_sale(dsn, order_id, op="r", **row)
    return len({row["created"].replace(day=1) for row in rows})

"""How each warehouse table is derived from source-shaped rows, written once for two users.

The loader runs these SELECTs over the mirror (schema ``mirror``) to recompute dimension rows, and
over its staged batch to convert fact versions; reconciliation runs the very same SELECTs over the
source database (schema ``public``) and compares. So "the derivation" of docs/warehouse.md is
this module, and a change to it changes both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import pycountry
from psycopg2 import sql

SOURCE_SCHEMA = "public"  # the source's tables, which reconcile derives from
MIRROR_SCHEMA = "mirror"  # the warehouse's copy of them, which the loader derives from
UNKNOWN_CURRENCY = "Unknown currency ({})"


def currency_name(code: str) -> str | None:
    """The ISO 4217 name of a currency code; None when the code is not in ISO 4217."""
    currency = pycountry.currencies.get(alpha_3=code.upper()) if len(code) == 3 else None
    return None if currency is None else str(currency.name)


def iso_currency_parameters() -> dict[str, list[str]]:
    """The ISO 4217 table as two arrays, the parameters the dim_currency derivation joins to."""
    codes = sorted(c.alpha_3 for c in pycountry.currencies)
    return {"iso_codes": codes, "iso_names": [str(currency_name(c)) for c in codes]}


@dataclass(frozen=True)
class Dimension:
    """A type 1 dimension: ``select`` yields (key, *columns) from source-shaped tables in ``{schema}``."""

    table: str
    key: str
    columns: tuple[str, ...]
    source: str          # the source table whose rows the dimension rows are (one per source row)
    source_key: str
    select: str

    def derive(self, schema: str) -> sql.Composed:
        """The derivation over the tables of ``schema``, one row per source row."""
        return sql.SQL(self.select).format(schema=sql.Identifier(schema))

    @property
    def all_columns(self) -> tuple[str, ...]:
        return (self.key, *self.columns)


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("dim_design", "design_id", ("design_name", "file_location", "file_name"),
              "design", "design_id",
              "SELECT design_id, design_name, file_location, file_name FROM {schema}.design"),
    Dimension("dim_currency", "currency_id", ("currency_code", "currency_name"),
              "currency", "currency_id",
              "SELECT c.currency_id, c.currency_code::text, "
              "COALESCE(iso.name, 'Unknown currency (' || c.currency_code || ')') "
              "FROM {schema}.currency c "
              "LEFT JOIN unnest(%(iso_codes)s::text[], %(iso_names)s::text[]) AS iso(code, name) "
              "ON iso.code = upper(c.currency_code)"),
    Dimension("dim_location", "location_id",
              ("address_line_1", "address_line_2", "district", "city", "postal_code", "country",
               "phone"),
              "address", "address_id",
              "SELECT address_id, address_line_1, address_line_2, district, city, postal_code, "
              "country, phone FROM {schema}.address"),
    Dimension("dim_counterparty", "counterparty_id",
              ("counterparty_legal_name", "counterparty_legal_address_line_1",
               "counterparty_legal_address_line_2", "counterparty_legal_district",
               "counterparty_legal_city", "counterparty_legal_postal_code",
               "counterparty_legal_country", "counterparty_legal_phone_number"),
              "counterparty", "counterparty_id",
              "SELECT cp.counterparty_id, cp.counterparty_legal_name, a.address_line_1, "
              "a.address_line_2, a.district, a.city, a.postal_code, a.country, a.phone "
              "FROM {schema}.counterparty cp "
              "LEFT JOIN {schema}.address a ON a.address_id = cp.legal_address_id"),
    Dimension("dim_staff", "staff_id",
              ("first_name", "last_name", "department_name", "location", "email_address"),
              "staff", "staff_id",
              "SELECT s.staff_id, s.first_name, s.last_name, d.department_name, d.location, "
              "s.email_address FROM {schema}.staff s "
              "LEFT JOIN {schema}.department d ON d.department_id = s.department_id"),
    Dimension("dim_payment_type", "payment_type_id", ("payment_type_name",),
              "payment_type", "payment_type_id",
              "SELECT payment_type_id, payment_type_name::text FROM {schema}.payment_type"),
    Dimension("dim_transaction", "transaction_id",
              ("transaction_type", "sales_order_id", "purchase_order_id"),
              "transaction", "transaction_id",
              "SELECT transaction_id, transaction_type::text, sales_order_id, purchase_order_id "
              "FROM {schema}.transaction"),
)
DIMENSIONS_BY_TABLE = {d.table: d for d in DIMENSIONS}


@dataclass(frozen=True)
class Dependency:
    """Rows of ``dimension`` to recompute when ``source`` rows change.

    ``keys`` selects the dimension keys affected by the changed source keys, which it reads from
    ``{changed}`` (a relation with the source table's key column) and the tables in ``{schema}``.
    """

    source: str
    dimension: str
    keys: str

    def affected(self, schema: str, changed: sql.Composable) -> sql.Composed:
        """The dimension keys that the source keys in ``changed`` affect, over the tables of ``schema``."""
        return sql.SQL(self.keys).format(schema=sql.Identifier(schema), changed=changed)


DEPENDENCIES: tuple[Dependency, ...] = (
    Dependency("design", "dim_design", "SELECT design_id FROM {changed}"),
    Dependency("currency", "dim_currency", "SELECT currency_id FROM {changed}"),
    Dependency("address", "dim_location", "SELECT address_id FROM {changed}"),
    Dependency("address", "dim_counterparty",
               "SELECT counterparty_id FROM {schema}.counterparty "
               "WHERE legal_address_id IN (SELECT address_id FROM {changed})"),
    Dependency("counterparty", "dim_counterparty", "SELECT counterparty_id FROM {changed}"),
    Dependency("staff", "dim_staff", "SELECT staff_id FROM {changed}"),
    Dependency("department", "dim_staff",
               "SELECT staff_id FROM {schema}.staff "
               "WHERE department_id IN (SELECT department_id FROM {changed})"),
    Dependency("payment_type", "dim_payment_type", "SELECT payment_type_id FROM {changed}"),
    Dependency("transaction", "dim_transaction", "SELECT transaction_id FROM {changed}"),
)


@dataclass(frozen=True)
class Fact:
    """An append-only fact table: one row per version of a row of ``source``.

    ``columns`` pairs each fact column with its SQL expression over the source row's columns.
    """

    table: str
    source: str
    key: str
    columns: tuple[tuple[str, str], ...]

    @property
    def current_view(self) -> str:
        """The current state: a table kept from the fact history by triggers (migrations 007, 008),
        named as the view it replaced."""
        return f"{self.table}_current"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def date_columns(self) -> tuple[str, ...]:
        """Fact columns that reference dim_date."""
        return tuple(name for name, _ in self.columns if name.endswith("_date"))

    def referenced_dates(self, relation: sql.Composable) -> sql.Composed:
        """The dates the fact-shaped rows of ``relation`` reference (one column, may repeat)."""
        return sql.SQL("SELECT unnest(ARRAY[{}]) FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(name) for name in self.date_columns), relation)

    def convert(self, relation: sql.Composable, extra: tuple[sql.Composable, ...] = ()) -> sql.Composed:
        """SELECT of the fact columns (then ``extra`` items) from ``relation``, source-shaped rows."""
        items = [sql.SQL("{} AS {}").format(sql.SQL(expr), sql.Identifier(name))
                 for name, expr in self.columns]
        return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join([*items, *extra]), relation)


_TIMESTAMPS = (("created_date", "created_at::date"), ("created_time", "created_at::time"),
               ("last_updated_date", "last_updated::date"), ("last_updated_time", "last_updated::time"))

FACTS: tuple[Fact, ...] = (
    Fact("fact_sales_order", "sales_order", "sales_order_id", (
        ("sales_order_id", "sales_order_id"), *_TIMESTAMPS,
        ("sales_staff_id", "staff_id"), ("counterparty_id", "counterparty_id"),
        ("units_sold", "units_sold"), ("unit_price", "unit_price"), ("currency_id", "currency_id"),
        ("design_id", "design_id"), ("agreed_payment_date", "agreed_payment_date::date"),
        ("agreed_delivery_date", "agreed_delivery_date::date"),
        ("agreed_delivery_location_id", "agreed_delivery_location_id"))),
    Fact("fact_purchase_order", "purchase_order", "purchase_order_id", (
        ("purchase_order_id", "purchase_order_id"), *_TIMESTAMPS,
        ("staff_id", "staff_id"), ("counterparty_id", "counterparty_id"),
        ("item_code", "item_code"), ("item_quantity", "item_quantity"),
        ("item_unit_price", "item_unit_price"), ("currency_id", "currency_id"),
        ("agreed_delivery_date", "agreed_delivery_date::date"),
        ("agreed_payment_date", "agreed_payment_date::date"),
        ("agreed_delivery_location_id", "agreed_delivery_location_id"))),
    Fact("fact_payment", "payment", "payment_id", (
        ("payment_id", "payment_id"), *_TIMESTAMPS,
        ("transaction_id", "transaction_id"), ("counterparty_id", "counterparty_id"),
        ("payment_amount", "payment_amount"), ("currency_id", "currency_id"),
        ("payment_type_id", "payment_type_id"), ("paid", "paid"),
        ("payment_date", "payment_date::date"))),
)
FACTS_BY_SOURCE = {f.source: f for f in FACTS}

# dim_date: its columns, derived from the dates in a one-column query.
DATE_COLUMNS = ("date_id", "year", "month", "day", "day_of_week", "day_name", "month_name", "quarter")
# The dates are made distinct before the columns are derived: a file's 100,000 versions reference
# 400,000 dates and a few hundred distinct ones, and to_char costs.
_DATE_DERIVATION = (
    "SELECT d, extract(year FROM d)::int, extract(month FROM d)::int, "
    "extract(day FROM d)::int, extract(isodow FROM d)::int, to_char(d, 'FMDay'), "
    "to_char(d, 'FMMonth'), extract(quarter FROM d)::int "
    "FROM (SELECT DISTINCT d FROM ({dates}) AS r(d) WHERE d IS NOT NULL) AS dates(d)")


def date_rows(dates: sql.Composable) -> sql.Composed:
    """dim_date rows for the dates that ``dates`` (a one-column query) yields."""
    return sql.SQL(_DATE_DERIVATION).format(dates=dates)

"""The dashboard's reads of the warehouse: sales by time, currency, country, design, staff, department.

Everything comes from ``fact_sales_order_current`` (the current version of each order) joined to its
dimensions, in one grouped query (``GROUPING SETS``): one scan per refresh, whatever the charts.
Values are summed per currency only; units and order counts add up across currencies.
Designs are grouped by name (many designs share one), which is how the business speaks of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg2 import sql

from dashboard.errors import BadRequest

TOP = 10
# Date range choices: days back from today (None = all time) and the time bucket of the charts.
RANGES: dict[str, tuple[int | None, str]] = {
    "today": (1, "hour"), "7d": (7, "day"), "30d": (30, "day"), "365d": (365, "month"),
    "all": (None, "month")}
FILTER_COLUMNS = {"currency": "c.currency_code", "country": "l.country",
                  "design": "d.design_name", "department": "st.department_name"}
MAX_FILTER_LENGTH = 200

SALES = """
WITH s AS (
    SELECT date_trunc(%(bucket)s, f.created_date + coalesce(f.created_time, time '00:00')) AS bucket,
           f.units_sold AS units, f.units_sold * f.unit_price AS value,
           coalesce(c.currency_code, '?') AS currency, coalesce(l.country, '?') AS country,
           coalesce(d.design_name, '?') AS design,
           coalesce(st.first_name || ' ' || st.last_name, '?') AS staff,
           coalesce(st.department_name, '?') AS department
    FROM public.fact_sales_order_current f
    LEFT JOIN public.dim_currency c ON c.currency_id = f.currency_id
    LEFT JOIN public.dim_location l ON l.location_id = f.agreed_delivery_location_id
    LEFT JOIN public.dim_design d ON d.design_id = f.design_id
    LEFT JOIN public.dim_staff st ON st.staff_id = f.sales_staff_id
    WHERE {where}
)
SELECT CASE
         WHEN GROUPING(bucket) = 0 THEN 'over_time'
         WHEN GROUPING(currency) = 0 THEN 'by_currency'
         WHEN GROUPING(country) = 0 THEN 'by_country'
         WHEN GROUPING(design) = 0 THEN 'top_designs'
         WHEN GROUPING(staff) = 0 THEN 'top_staff'
         WHEN GROUPING(department) = 0 THEN 'top_departments'
         ELSE 'totals' END AS grouping_set,
       bucket, coalesce(currency, country, design, staff, department) AS label,
       count(*), sum(units), sum(value)
FROM s
GROUP BY GROUPING SETS ((bucket, currency), (currency), (country), (design), (staff), (department), ())
"""

OPTIONS = """
SELECT 'currency', currency_code FROM public.dim_currency WHERE currency_code IS NOT NULL
UNION SELECT 'country', country FROM public.dim_location WHERE country IS NOT NULL
UNION SELECT 'design', design_name FROM public.dim_design WHERE design_name IS NOT NULL
UNION SELECT 'department', department_name FROM public.dim_staff WHERE department_name IS NOT NULL
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Filters:
    """What the page asks for: equality filters on dimension attributes and a date range."""

    currency: str | None = None
    country: str | None = None
    design: str | None = None
    department: str | None = None
    range: str = "all"

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> Filters:
        """From a parsed query string; BadRequest for an unknown range or an oversized value."""
        values: dict[str, str | None] = {}
        for name in FILTER_COLUMNS:
            value = (query.get(name) or [""])[-1]
            if len(value) > MAX_FILTER_LENGTH:
                raise BadRequest(f"filter {name} is longer than {MAX_FILTER_LENGTH} characters")
            values[name] = value or None
        date_range = (query.get("range") or ["all"])[-1]
        if date_range not in RANGES:
            raise BadRequest(f"unknown date range {date_range!r}: one of {', '.join(RANGES)}")
        return cls(range=date_range, **values)

    def where(self, today: date) -> tuple[sql.Composed, dict[str, Any]]:
        """The WHERE condition (columns are constants, values are parameters) and its parameters."""
        days, bucket = RANGES[self.range]
        conditions = [sql.SQL("true")]
        params: dict[str, Any] = {"bucket": bucket}
        for name, column in FILTER_COLUMNS.items():
            value = getattr(self, name)
            if value is not None:
                conditions.append(sql.SQL("{} = {}").format(sql.SQL(column), sql.Placeholder(name)))
                params[name] = value
        if days is not None:
            conditions.append(sql.SQL("f.created_date >= %(date_from)s"))
            params["date_from"] = today - timedelta(days=days - 1)
        return sql.SQL(" AND ").join(conditions), params


def buckets(first: datetime, last: datetime, unit: str) -> list[str]:
    """Every time bucket from ``first`` to ``last``, so that quiet periods show as gaps."""
    found = []
    current = first
    while current <= last:
        found.append(current.isoformat())
        if unit == "hour":
            current += timedelta(hours=1)
        elif unit == "day":
            current += timedelta(days=1)
        else:
            current = current.replace(year=current.year + current.month // 12,
                                      month=current.month % 12 + 1)
    return found


def _number(value: Any) -> float:
    return float(value) if value is not None else 0.0


def sales(conn: Any, filters: Filters, today: date) -> dict[str, Any]:
    """Everything the charts show, for ``filters``; JSON-ready."""
    where, params = filters.where(today)
    with conn.cursor() as cur:
        cur.execute(sql.SQL(SALES).format(where=where), params)
        rows = cur.fetchall()
    result: dict[str, Any] = {"bucket": RANGES[filters.range][1], "over_time": [], "by_currency": [],
                              "by_country": [], "top_designs": [], "top_staff": [],
                              "top_departments": [],
                              "totals": {"orders": 0, "units": 0, "value": {}}}
    for grouping_set, bucket, label, orders, units, value in rows:
        if grouping_set == "totals":
            result["totals"].update(orders=orders, units=int(units or 0))
            continue
        item: dict[str, Any] = {"label": label, "orders": orders, "units": int(units or 0),
                                "value": _number(value)}
        if grouping_set == "over_time":
            item["bucket"] = bucket.isoformat()
        result[grouping_set].append(item)
    result["over_time"].sort(key=lambda i: (i["bucket"], i["label"]))
    times = [bucket for grouping_set, bucket, *_ in rows if grouping_set == "over_time"]
    result["buckets"] = buckets(min(times), max(times), result["bucket"]) if times else []
    result["totals"]["value"] = {i["label"]: i["value"] for i in result["by_currency"]}
    for key in ("by_currency", "by_country", "top_designs", "top_staff", "top_departments"):
        result[key] = sorted(result[key], key=lambda i: (-i["units"], i["label"]))[:TOP]
    return result


def options(conn: Any) -> dict[str, list[str]]:
    """The choices of each drop-down filter, from the dimensions."""
    with conn.cursor() as cur:
        cur.execute(OPTIONS)
        rows = cur.fetchall()
    found: dict[str, list[str]] = {name: [] for name in FILTER_COLUMNS}
    for name, value in rows:
        found[name].append(value)
    return found


VERSION = """
SELECT (SELECT coalesce(max(sales_record_id), 0) FROM public.fact_sales_order),
       (SELECT coalesce(max(xmin::text::bigint), 0) FROM (
            SELECT xmin FROM public.dim_currency UNION ALL SELECT xmin FROM public.dim_location
            UNION ALL SELECT xmin FROM public.dim_design UNION ALL SELECT xmin FROM public.dim_staff
        ) dims)
"""


def version(conn: Any) -> tuple[int, int]:
    """Moves with every sales fact appended and every change to a dimension the page shows.

    The newest fact id is an index lookup; the dimensions are small (hundreds of rows), so the
    newest writing transaction id among them is cheap to read too.
    """
    with conn.cursor() as cur:
        cur.execute(VERSION)
        facts, dims = cur.fetchone()
    return int(facts), int(dims)

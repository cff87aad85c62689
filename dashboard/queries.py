"""The dashboard's reads of the warehouse: the live view (:func:`live`) and the history (:func:`sales`).

- Live: orders placed (source commit time) in the last 15 minutes, per minute and, for the last two
  minutes, per second; the newest orders with their end-to-end latency. From ``fact_sales_order``
  insert versions (one per order), found through its ``loaded_at`` index: a row committed in the
  window was loaded in it too.
- History: ``dashboard_sales`` (migration 010), the current orders summed per time bucket,
  currency and dimension id, kept by triggers in the transaction that changes them: a refresh
  reads summary rows (bounded by time span x dimension members), not orders. A filter on a
  country, design or department crosses two dimensions the summary does not: those read
  ``fact_sales_order_current`` joined to its dimensions in one grouped query (``GROUPING SETS``).

Values are summed per currency only; units and order counts add up across currencies.
Designs are grouped by name (many designs share one), which is how the business speaks of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from psycopg2 import sql

from dashboard.errors import BadRequest
from totes_cdc.contract import OP_INSERT

TOP = 10
# Date range choices: days back from today (None = all time) and the time bucket of the charts.
RANGES: dict[str, tuple[int | None, str]] = {
    "today": (1, "hour"), "7d": (7, "day"), "30d": (30, "day"), "365d": (365, "month"),
    "all": (None, "month")}
FILTER_COLUMNS = {"currency": "c.currency_code", "country": "l.country",
                  "design": "d.design_name", "department": "st.department_name"}
MAX_FILTER_LENGTH = 200
# Up to this many empty buckets in a row are drawn (quiet periods); a longer empty span is one GAP.
QUIET_SPAN = 2
GAP = "…"
LIVE_MINUTES = 15
LIVE_SECONDS = 120
NEWEST = 10

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

# The same rows as SALES, from the summary rows ``{where}`` picks (Filters.summary_where).
SUMMARY = """
WITH g AS NOT MATERIALIZED (
    SELECT s.grain, s.bucket, s.member_id, coalesce(c.currency_code, '?') AS currency,
           s.orders, s.units, s.value
    FROM public.dashboard_sales s
    LEFT JOIN public.dim_currency c ON c.currency_id = s.currency_id
    WHERE {where}
)
SELECT 'over_time', date_trunc(%(bucket)s, bucket), currency, sum(orders)::bigint,
       sum(units)::bigint, sum(value)
FROM g WHERE grain = 'time' GROUP BY 2, 3
UNION ALL
SELECT 'by_currency', NULL, currency, sum(orders)::bigint, sum(units)::bigint, sum(value)
FROM g WHERE grain = 'time' GROUP BY 3
UNION ALL
SELECT 'totals', NULL, NULL, coalesce(sum(orders), 0)::bigint, sum(units)::bigint, sum(value)
FROM g WHERE grain = 'time'
UNION ALL
SELECT 'by_country', NULL, coalesce(l.country, '?'), sum(orders)::bigint, sum(units)::bigint,
       sum(value)
FROM g LEFT JOIN public.dim_location l ON l.location_id = g.member_id
WHERE grain = 'location' GROUP BY 3
UNION ALL
SELECT 'top_designs', NULL, coalesce(d.design_name, '?'), sum(orders)::bigint,
       sum(units)::bigint, sum(value)
FROM g LEFT JOIN public.dim_design d ON d.design_id = g.member_id
WHERE grain = 'design' GROUP BY 3
UNION ALL
SELECT 'top_staff', NULL, coalesce(st.first_name || ' ' || st.last_name, '?'),
       sum(orders)::bigint, sum(units)::bigint, sum(value)
FROM g LEFT JOIN public.dim_staff st ON st.staff_id = g.member_id
WHERE grain = 'staff' GROUP BY 3
UNION ALL
SELECT 'top_departments', NULL, coalesce(st.department_name, '?'), sum(orders)::bigint,
       sum(units)::bigint, sum(value)
FROM g LEFT JOIN public.dim_staff st ON st.staff_id = g.member_id
WHERE grain = 'staff' GROUP BY 3
"""
# Filters the summary cannot answer (see the module docstring).
CROSS_FILTERS = ("country", "design", "department")

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

    def summary_where(self, today: date) -> tuple[sql.Composed, dict[str, Any]]:
        """The ``dashboard_sales`` rows of the date range, at the charts' time bucket, in the
        currency filtered on; and the parameters. Only for filters without CROSS_FILTERS.

        Hour charts read the hourly time rows and the daily member rows; day charts the daily
        rows; month charts the monthly rows from the first whole month in the range, and the
        daily rows of the days before it; all time, the monthly time rows and the members' totals.
        """
        days, bucket = RANGES[self.range]
        params: dict[str, Any] = {"bucket": bucket}
        conditions = [sql.SQL("true")]
        if self.currency is not None:
            conditions.append(sql.SQL("{} = %(currency)s").format(sql.SQL(FILTER_COLUMNS["currency"])))
            params["currency"] = self.currency
        if days is None:
            conditions.append(sql.SQL("(s.resolution = 'total' OR s.resolution = 'month' "
                                      "AND s.grain = 'time')"))
            return sql.SQL(" AND ").join(conditions), params
        params["date_from"] = date_from = today - timedelta(days=days - 1)
        if bucket == "hour":
            rows = ("(s.resolution = 'hour' OR s.grain <> 'time' AND s.resolution = 'day') "
                    "AND s.bucket >= %(date_from)s")
        elif bucket == "day":
            rows = "s.resolution = 'day' AND s.bucket >= %(date_from)s"
        else:
            params["month_from"] = _step(datetime.combine(date_from - timedelta(days=1), time())
                                         .replace(day=1), "month")
            rows = ("(s.resolution = 'month' AND s.bucket >= %(month_from)s OR s.resolution = 'day' "
                    "AND s.bucket >= %(date_from)s AND s.bucket < %(month_from)s)")
        conditions.append(sql.SQL(rows))
        return sql.SQL(" AND ").join(conditions), params


def _step(bucket: datetime, unit: str) -> datetime:
    if unit == "second":
        return bucket + timedelta(seconds=1)
    if unit == "minute":
        return bucket + timedelta(minutes=1)
    if unit == "hour":
        return bucket + timedelta(hours=1)
    if unit == "day":
        return bucket + timedelta(days=1)
    return bucket.replace(year=bucket.year + bucket.month // 12, month=bucket.month % 12 + 1)


def timeline(present: Iterable[datetime], unit: str) -> list[str]:
    """The time axis over the buckets that have sales: short quiet periods show as empty buckets,
    an empty span longer than QUIET_SPAN buckets as one GAP, so years without orders take no room."""
    found: list[str] = []
    previous: datetime | None = None
    for bucket in sorted(set(present)):
        if previous is not None:
            empty: list[str] = []
            current = _step(previous, unit)
            while current < bucket and len(empty) <= QUIET_SPAN:
                empty.append(current.isoformat())
                current = _step(current, unit)
            found.extend(empty if len(empty) <= QUIET_SPAN else [GAP])
        found.append(bucket.isoformat())
        previous = bucket
    return found


def _number(value: Any) -> float:
    return float(value) if value is not None else 0.0


def sales_rows(conn: Any, filters: Filters, today: date) -> list[tuple[Any, ...]]:
    """The grouped figures for ``filters``: (grouping set, bucket, label, orders, units, value)."""
    if any(getattr(filters, name) is not None for name in CROSS_FILTERS):
        where, params = filters.where(today)
        query = sql.SQL(SALES).format(where=where)
    else:
        where, params = filters.summary_where(today)
        query = sql.SQL(SUMMARY).format(where=where)
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
    return rows


def sales(conn: Any, filters: Filters, today: date) -> dict[str, Any]:
    """Everything the charts show, for ``filters``; JSON-ready."""
    rows = sales_rows(conn, filters, today)
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
    result["buckets"] = timeline((bucket for grouping_set, bucket, *_ in rows
                                  if grouping_set == "over_time"), result["bucket"])
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


LIVE_ORDERS = """
SELECT f.sales_order_id, f.source_commit_ts, f.loaded_at, f.units_sold,
       f.units_sold * f.unit_price AS value, coalesce(c.currency_code, '?') AS currency,
       coalesce(d.design_name, '?') AS design, coalesce(l.country, '?') AS country
FROM public.fact_sales_order f
LEFT JOIN public.dim_currency c ON c.currency_id = f.currency_id
LEFT JOIN public.dim_location l ON l.location_id = f.agreed_delivery_location_id
LEFT JOIN public.dim_design d ON d.design_id = f.design_id
WHERE f.loaded_at > %(since)s AND f.source_commit_ts > %(since)s AND f.source_op = %(insert)s
"""

LIVE = """
WITH o AS ({orders})
SELECT date_trunc('minute', source_commit_ts), currency, count(*), sum(units_sold), sum(value)
FROM o GROUP BY 1, 2
"""

LIVE_PER_SECOND = """
WITH o AS ({orders})
SELECT date_trunc('second', source_commit_ts), count(*) FROM o
WHERE source_commit_ts > %(seconds_since)s GROUP BY 1
"""

NEWEST_ORDERS = """
WITH o AS ({orders})
SELECT sales_order_id, source_commit_ts, extract(epoch FROM loaded_at - source_commit_ts) * 1000,
       units_sold, value, currency, design, country
FROM o ORDER BY source_commit_ts DESC, sales_order_id DESC LIMIT %(newest)s
"""


def live(conn: Any) -> dict[str, Any]:
    """The last LIVE_MINUTES of orders, by the warehouse's clock; JSON-ready.

    ``per_minute`` has a row per minute and currency (orders, units, value), ``per_second`` the
    order count of each of the last LIVE_SECONDS seconds, ``newest`` the last NEWEST orders placed.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now: datetime = cur.fetchone()[0]
        since = now.replace(second=0, microsecond=0) - timedelta(minutes=LIVE_MINUTES - 1)
        seconds_since = now.replace(microsecond=0) - timedelta(seconds=LIVE_SECONDS - 1)
        params = {"since": since, "seconds_since": seconds_since, "newest": NEWEST, "insert": OP_INSERT}
        cur.execute(LIVE.format(orders=LIVE_ORDERS), params)
        per_minute = cur.fetchall()
        cur.execute(LIVE_PER_SECOND.format(orders=LIVE_ORDERS), params)
        per_second = dict(cur.fetchall())
        cur.execute(NEWEST_ORDERS.format(orders=LIVE_ORDERS), params)
        newest = cur.fetchall()
    seconds = [seconds_since + timedelta(seconds=i) for i in range(LIVE_SECONDS)]
    totals: dict[str, Any] = {"orders": 0, "units": 0, "value": {}}
    for _, currency, orders, units, value in per_minute:
        totals["orders"] += orders
        totals["units"] += int(units or 0)
        totals["value"][currency] = totals["value"].get(currency, 0.0) + _number(value)
    return {
        "now": now.isoformat(),
        "minutes": [(since + timedelta(minutes=i)).isoformat() for i in range(LIVE_MINUTES)],
        "per_minute": sorted(({"bucket": b.isoformat(), "label": c, "orders": n, "units": int(u or 0),
                               "value": _number(v)} for b, c, n, u, v in per_minute),
                             key=lambda i: (i["bucket"], i["label"])),
        "seconds": [s.isoformat() for s in seconds],
        "per_second": [per_second.get(s, 0) for s in seconds],
        "totals": totals,
        "newest": [{"order": order_id, "committed_at": committed.isoformat(),
                    "latency_ms": float(latency), "units": units, "value": _number(value),
                    "currency": currency, "design": design, "country": country}
                   for order_id, committed, latency, units, value, currency, design, country in newest],
    }

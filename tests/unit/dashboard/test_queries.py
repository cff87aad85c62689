"""Dashboard request parsing and time buckets."""

from datetime import date, datetime

import pytest

from dashboard.errors import BadRequest
from dashboard.queries import GAP, Filters, timeline


def test_filters_from_a_query_string():
    f = Filters.from_query({"currency": ["GBP"], "country": [""], "range": ["7d"]})
    assert f == Filters(currency="GBP", range="7d")
    assert Filters.from_query({}) == Filters()


@pytest.mark.parametrize(("query", "message"), [
    ({"range": ["forever"]}, "unknown date range 'forever'"),
    ({"design": ["x" * 201]}, "filter design is longer than 200 characters"),
])
def test_bad_filters(query, message):
    with pytest.raises(BadRequest, match=message):
        Filters.from_query(query)


def test_where_parameters_carry_the_values_and_the_date_range():
    _, params = Filters(currency="GBP", department="Sales", range="7d").where(date(2026, 3, 10))
    assert params == {"bucket": "day", "currency": "GBP", "department": "Sales",
                      "date_from": date(2026, 3, 4)}
    assert Filters().where(date(2026, 3, 10))[1] == {"bucket": "month"}


def test_timeline_shows_short_quiet_periods_and_crosses_year_ends():
    assert timeline([datetime(2026, 2, 1), datetime(2025, 11, 1)], "month") == [
        "2025-11-01T00:00:00", "2025-12-01T00:00:00", "2026-01-01T00:00:00", "2026-02-01T00:00:00"]
    assert timeline([datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 11), datetime(2026, 1, 1, 9)],
                    "hour") == ["2026-01-01T09:00:00", "2026-01-01T10:00:00", "2026-01-01T11:00:00"]
    assert timeline([], "day") == []


def test_timeline_skips_long_empty_spans():
    """Two years between the real rows and the simulated ones take one slot, not 24."""
    assert timeline([datetime(2023, 5, 1), datetime(2023, 6, 1), datetime(2025, 11, 1),
                     datetime(2026, 1, 1)], "month") == [
        "2023-05-01T00:00:00", "2023-06-01T00:00:00", GAP, "2025-11-01T00:00:00",
        "2025-12-01T00:00:00", "2026-01-01T00:00:00"]
    assert timeline([datetime(2026, 1, 1), datetime(2026, 1, 5)], "day") == [
        "2026-01-01T00:00:00", GAP, "2026-01-05T00:00:00"]
    assert len(timeline([datetime(2026, 1, 1), datetime(2026, 1, 4)], "day")) == 4


def test_summary_rows_of_each_date_range():
    """Month charts read whole months and the days of the first, partial one; a range starting on
    the first of a month reads months only."""
    today = date(2026, 3, 10)
    assert Filters(range="365d").summary_where(today)[1] == {
        "bucket": "month", "date_from": date(2025, 3, 11), "month_from": datetime(2025, 4, 1)}
    assert Filters(range="365d").summary_where(date(2026, 2, 28))[1]["month_from"] == datetime(
        2025, 3, 1)
    assert Filters(range="today", currency="GBP").summary_where(today)[1] == {
        "bucket": "hour", "currency": "GBP", "date_from": today}
    assert Filters().summary_where(today)[1] == {"bucket": "month"}

"""The synthetic totesys rows: deterministic, and shaped like the real data."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from decimal import Decimal

import pytest

from totes_ops.stack import synthetic
from totes_ops.stack.seed import LOAD_ORDER

REAL_COUNTS = {"address": 30, "counterparty": 20, "currency": 3, "department": 8, "design": 473,
               "payment": 15836, "payment_type": 4, "purchase_order": 4649, "sales_order": 11187,
               "staff": 20, "transaction": 15836}


@pytest.fixture(scope="module")
def rows():
    return synthetic.generate(0)


def test_same_seed_same_rows_other_seed_other_rows(rows):
    assert synthetic.generate(0) == rows
    assert synthetic.generate(1)["sales_order"] != rows["sales_order"]


def test_counts_match_the_real_data(rows):
    assert list(rows) == list(LOAD_ORDER)
    assert {table: len(r) for table, r in rows.items()} == REAL_COUNTS


def test_nulls_and_names_follow_the_real_quirks(rows):
    assert sum(a["address_line_2"] is None for a in rows["address"]) == 20
    assert sum(a["district"] is None for a in rows["address"]) == 14
    assert any("," in c["counterparty_legal_name"] for c in rows["counterparty"])
    names = Counter(d["design_name"] for d in rows["design"])
    assert len(names) == 12 and sum(names.values()) == 473
    assert [c["currency_code"] for c in rows["currency"]] == ["GBP", "USD", "EUR"]


def test_every_order_has_one_transaction_and_one_payment_of_its_amount(rows):
    sales = {o["sales_order_id"]: o for o in rows["sales_order"]}
    purchases = {o["purchase_order_id"]: o for o in rows["purchase_order"]}
    seen = Counter()
    for t, p in zip(rows["transaction"], rows["payment"], strict=True):
        assert (t["sales_order_id"] is None) != (t["purchase_order_id"] is None)
        assert p["transaction_id"] == t["transaction_id"]
        if t["sales_order_id"]:
            order = sales[t["sales_order_id"]]
            assert p["payment_amount"] == order["units_sold"] * order["unit_price"]
            assert (t["transaction_type"], p["payment_type_id"]) == ("SALE", 1)
        else:
            order = purchases[t["purchase_order_id"]]
            assert p["payment_amount"] == order["item_quantity"] * order["item_unit_price"]
            assert (t["transaction_type"], p["payment_type_id"]) == ("PURCHASE", 3)
        assert (p["currency_id"], p["counterparty_id"]) == (order["currency_id"],
                                                            order["counterparty_id"])
        assert t["created_at"] == order["created_at"] == p["created_at"]
        seen[t["transaction_type"]] += 1
    assert seen == {"SALE": 11187, "PURCHASE": 4649}


def test_values_dates_and_payments_stay_in_the_real_ranges(rows):
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")
    for order in rows["sales_order"]:
        assert 1001 <= order["units_sold"] <= 99999
        assert Decimal("2.00") <= order["unit_price"] <= Decimal("4.00")
        created = datetime.fromisoformat(order["created_at"]).date()
        assert 0 <= (date.fromisoformat(order["agreed_payment_date"]) - created).days <= 6
        assert 0 <= (date.fromisoformat(order["agreed_delivery_date"]) - created).days <= 650
        assert stamp.fullmatch(order["created_at"])
        assert order["design_id"] <= 473
    for order in rows["purchase_order"]:
        assert 1 <= order["item_quantity"] <= 999
        assert len(order["item_code"]) == 7
    paid = [p for p in rows["payment"] if p["paid"]]
    assert 0.55 < len(paid) / len(rows["payment"]) < 0.67
    for p in paid:
        days = (datetime.fromisoformat(p["last_updated"])
                - datetime.fromisoformat(p["created_at"])).total_seconds() / 86400
        assert 0.5 < days <= 6
    assert all(p["last_updated"] == p["created_at"] for p in rows["payment"] if not p["paid"])


def test_orders_use_only_designs_created_before_them(rows):
    design_created = {d["design_id"]: d["created_at"] for d in rows["design"]}
    assert all(design_created[o["design_id"]] <= o["created_at"] for o in rows["sales_order"])
    assert len({o["design_id"] for o in rows["sales_order"]}) > 400

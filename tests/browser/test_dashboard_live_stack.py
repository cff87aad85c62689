"""The whole local stack in a browser: an order committed at the source shows on the page live."""

from __future__ import annotations

import psycopg2
import pytest

from tests.browser.test_dashboard_page import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.conftest import start_stack, stop_stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

DESIGN = "Zebra stripe"


def _new_order_with_a_new_design(source_dsn: str) -> None:
    """A design and a sales order (with its transaction and payment) in one source transaction."""
    conn = psycopg2.connect(source_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO design (design_name, file_location, file_name, last_updated) "
                        "VALUES (%s, '/designs', 'zebra.json', now()) RETURNING design_id", (DESIGN,))
            design_id = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO sales_order (last_updated, design_id, staff_id, counterparty_id, "
                "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id) VALUES (now(), %s, 1, 1, 4321, 3.00, 1, "
                "to_char(now() + interval '5 days', 'YYYY-MM-DD'), to_char(now(), 'YYYY-MM-DD'), 1) "
                "RETURNING sales_order_id", (design_id,))
            order_id = cur.fetchone()[0]
            cur.execute("INSERT INTO transaction (transaction_type, sales_order_id, last_updated) "
                        "VALUES ('SALE', %s, now()) RETURNING transaction_id", (order_id,))
            cur.execute("INSERT INTO payment (last_updated, transaction_id, counterparty_id, "
                        "payment_amount, currency_id, payment_type_id, paid, payment_date, "
                        "company_ac_number, counterparty_ac_number) "
                        "VALUES (now(), %s, 1, 12963.00, 1, 1, false, "
                        "to_char(now(), 'YYYY-MM-DD'), 12345678, 87654321)", (cur.fetchone()[0],))
    finally:
        conn.close()


def test_an_order_committed_at_the_source_appears_on_the_page_without_reload(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    stack = start_stack(tmp_path / "state", "--seed", "synthetic")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(stack.info["dashboard_url"])
            page.locator("#tab-history").click()
            # The snapshot's orders arrive first.
            page.wait_for_function(
                "Number(document.querySelector('#total-orders').textContent.replace(/,/g, '')) > 0",
                timeout=180_000)
            assert page.locator("#chart-units rect.bar").count() > 0
            page.evaluate("window.loadedOnce = true")

            _new_order_with_a_new_design(stack.source_dsn)

            page.wait_for_selector(f"#filter-design option[value='{DESIGN}']", state="attached",
                                   timeout=120_000)
            page.select_option("#filter-design", DESIGN)
            page.wait_for_function("document.querySelector('#total-orders').textContent === '1'")
            assert page.locator("#total-units").inner_text() == "4,321"

            page.locator("#tab-now").click()            # a new order: live, with its latency
            page.wait_for_function("document.querySelector('#live-orders').textContent === '1'")
            newest = page.locator("#newest tbody tr").first.inner_text()
            assert DESIGN in newest and "4,321" in newest
            assert page.evaluate("window.loadedOnce") is True
            browser.close()
    finally:
        stop_stack(stack)

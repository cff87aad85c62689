"""The dashboard in headless Chromium: it opens on "now", the history is one click away, charts
render, a filter applies, a new sale appears live in both views."""

from __future__ import annotations

import json
import os
import shutil

import psycopg2
import pytest

from dashboard import server
from tests.integration.dashboard import warehouse_rows

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def dashboard(warehouse_dsn, tmp_path, aws):
    """The dashboard's address over the sample warehouse, and how many months the sample's sales
    fall in."""
    warehouse_rows.create(warehouse_dsn)
    months = warehouse_rows.sample(warehouse_dsn)
    conn = psycopg2.connect(warehouse_dsn)
    with conn, conn.cursor() as cur:  # one loaded file's row of the latency waterfall
        cur.execute("INSERT INTO pipeline_latency VALUES ('f', 'sales_order', 1, 1, now(), now(), now(),"
                    " now(), 3, 4, 5, 6, 7, now(), 1, 2, 8)")
    conn.close()
    (tmp_path / "status").mkdir()  # a resync copying sales_order, its status as capture writes it
    (tmp_path / "status" / "resync.json").write_text(json.dumps({"pid": os.getpid(), "copies": [
        {"table": "public.sales_order", "rows_done": 250000, "estimated_total": 1000000,
         "rate": 50000.0, "eta_seconds": 15, "finished": False}]}))
    srv, threads = server.start(warehouse_dsn, port=0, state_dir=tmp_path)
    yield f"http://127.0.0.1:{srv.server_port}/", months
    server.stop(srv, threads)


def line_colours(page) -> set[str]:
    """The colours of the value chart's lines (a line breaks at a gap: one colour per currency)."""
    return set(page.eval_on_selector_all(
        "#chart-value .line", "els => els.map(e => e.getAttribute('stroke') || e.getAttribute('fill'))"))


@pytest.mark.parametrize("width", [1280, 390])
def test_charts_render_filters_apply_and_new_sales_appear_without_reload(
        browser, dashboard, warehouse_dsn, width):
    dashboard_url, months = dashboard
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(dashboard_url)

    # It opens on now: the sample's snapshot rows are history, nothing was ordered in 15 minutes.
    assert page.locator("#tab-now").get_attribute("aria-selected") == "true"
    assert page.locator("#view-history").is_hidden()
    page.wait_for_function("document.querySelector('#live-orders').textContent === '0'")
    assert page.locator("#newest tbody").inner_text() == "No order in the last 15 minutes"
    assert page.locator("#chart-live-seconds text.label").count() > 3        # a time axis
    page.locator("#tab-history").click()
    assert page.locator("#view-now").is_hidden()

    orders = page.locator("#total-orders")
    page.wait_for_function("document.querySelector('#total-orders').textContent === '6'")
    assert page.locator("#chart-units rect.bar").count() == months     # a bar per month with sales
    assert len(line_colours(page)) == 3                                # one line per currency
    assert "…" in page.locator("#chart-units text.label").all_text_contents()   # the empty year
    assert page.locator("#chart-country rect.bar").count() == 3
    assert page.locator("#chart-design text.label title").all_text_contents() == ["Steel", "Cotton"]
    assert "Norway" in page.locator("#chart-country").get_attribute("aria-label")
    page.wait_for_function("document.querySelector('#health-files').textContent !== 'unknown'")
    assert page.locator("#health-files").inner_text().isdigit()        # read from the queue
    page.wait_for_function("document.querySelectorAll('#stages tbody tr').length === 6")
    assert page.locator("#stages tbody tr").first.locator("td").all_text_contents() == [
        "Source commit to capture read", "1 ms", "2 ms"]
    assert page.locator("#stages tbody tr").last.locator("td").all_text_contents() == [
        "Source commit to warehouse", "6 ms", "7 ms"]
    assert page.locator("#copies li").all_text_contents() == [
        "public.sales_order 250,000/1,000,000 rows (25%), 50,000 rows/s, ETA 15 s"]

    page.select_option("#filter-currency", "GBP")
    page.wait_for_function("document.querySelector('#total-orders').textContent === '2'")
    assert page.locator("#chart-currency text.label title").all_text_contents() == ["GBP"]
    assert len(line_colours(page)) == 1

    page.evaluate("window.loadedOnce = true")
    warehouse_rows.add_sale(warehouse_dsn, 50, currency_id=1, units=5000, location_id=2)
    page.wait_for_function("document.querySelector('#total-orders').textContent === '3'",
                           timeout=10_000)
    assert orders.inner_text() == "3"
    assert page.locator("#total-units").inner_text() == "6,400"
    assert page.evaluate("window.loadedOnce") is True                  # no reload happened
    assert "3 orders shown" in page.locator("#updated").inner_text()

    page.select_option("#filter-currency", "")
    page.select_option("#filter-range", "today")
    page.wait_for_function("document.querySelector('#total-orders').textContent === '2'")

    page.locator("#tab-now").click()                                   # the new sale is live
    page.wait_for_function("document.querySelector('#live-orders').textContent === '1'")
    assert page.locator("#live-units").inner_text() == "5,000"
    assert page.locator("#live-newest").inner_text().endswith(("just now", "s ago"))
    first = page.locator("#newest tbody tr").first.inner_text()
    assert "#50" in first and "GBP 12,500" in first
    assert page.locator("#chart-live-seconds rect.bar").count() == 1
    assert page.locator("#chart-live-units rect.bar").count() == 1
    assert page.evaluate("window.loadedOnce") is True
    assert errors == []
    page.close()

"""Simulated business traffic on a real totesys database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest

from tests.conftest import query
from totes_cdc.errors import ConfigError
from totes_ops import simulate
from totes_ops.cli import main
from totes_ops.stack import seed, synthetic

pytestmark = pytest.mark.integration

COUNTED = ("sales_order", "purchase_order", "transaction", "payment")


@pytest.fixture
def seeded_dsn(totesys_dsn):
    conn = psycopg2.connect(totesys_dsn)
    try:
        synthetic.load_synthetic(conn)
    finally:
        conn.close()
    return totesys_dsn


def _state(dsn):
    conn = psycopg2.connect(dsn)
    try:
        counts = seed.row_counts(conn)
    finally:
        conn.close()
    paid = query(dsn, "SELECT count(*) FROM payment WHERE paid")[0][0]
    return counts, paid


def test_run_makes_orders_payments_edits_cancellations_that_the_database_shows(seeded_dsn):
    before, paid_before = _state(seeded_dsn)
    seen = []
    stats = simulate.run(seeded_dsn, rate=400, duration=4, seed=3, progress=seen.append)
    after, paid_after = _state(seeded_dsn)
    cancelled, removed = stats.sales_orders_cancelled, stats.payments_removed
    assert stats.transactions == (stats.sales_orders + stats.purchase_orders + stats.payments_paid
                                  + stats.edits + cancelled + removed)
    assert stats.sales_orders > 0 and stats.payments_paid > 0
    assert cancelled > 0 and removed > 0 and stats.long_transactions > 0
    assert after["sales_order"] - before["sales_order"] == stats.sales_orders - cancelled
    assert after["purchase_order"] - before["purchase_order"] == stats.purchase_orders
    new_orders = stats.sales_orders + stats.purchase_orders
    assert after["transaction"] - before["transaction"] == new_orders - cancelled
    assert after["payment"] - before["payment"] == new_orders - cancelled - removed
    assert paid_after - paid_before == stats.payments_paid
    assert stats.changes == (3 * new_orders + stats.payments_paid + stats.edits + 3 * cancelled
                             + removed)
    assert stats.fact_versions == 2 * (new_orders + cancelled) + stats.payments_paid + removed
    assert stats.rate > 0 and seen
    # A cancelled sales order leaves nothing behind: no transaction points at a missing order.
    assert query(seeded_dsn, "SELECT count(*) FROM transaction WHERE transaction_type = 'SALE' "
                             "AND sales_order_id IS NULL")[0][0] == 0
    # New rows keep the shape: one order per transaction, payment = units x price.
    assert query(seeded_dsn, "SELECT count(*) FROM payment p JOIN transaction t USING "
                  "(transaction_id) JOIN sales_order s USING (sales_order_id) "
                  "WHERE p.payment_amount <> s.units_sold * s.unit_price")[0][0] == 0


def test_same_seed_same_traffic(seeded_dsn, source_server):
    other = source_server.create_database(seeded_dsn.split("dbname=")[1].split()[0] + "_twin")
    conn = psycopg2.connect(other)
    try:
        seed.create_schema(conn)
        synthetic.load_synthetic(conn)
    finally:
        conn.close()
    for dsn in (seeded_dsn, other):
        conn = psycopg2.connect(dsn)
        side = psycopg2.connect(dsn)
        try:
            simulator = simulate.Simulator(conn, side, seed=11)
            stats = simulate.SimulationStats()
            for _ in range(300):
                simulator.step(stats)
            simulator.finish(stats)
        finally:
            side.close()
            conn.close()
        assert stats.sales_orders_cancelled and stats.payments_removed and stats.long_transactions
    orders = ("SELECT design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id "
              "FROM sales_order ORDER BY sales_order_id DESC LIMIT 200")
    assert query(seeded_dsn, orders) == query(other, orders)
    paid = "SELECT payment_id FROM payment WHERE paid ORDER BY payment_id"
    assert query(seeded_dsn, paid) == query(other, paid)
    edits = "SELECT design_id, design_name FROM design ORDER BY design_id"
    assert query(seeded_dsn, edits) == query(other, edits)
    kept = ("SELECT array_agg(sales_order_id ORDER BY sales_order_id), "
            "(SELECT array_agg(payment_id ORDER BY payment_id) FROM payment) FROM sales_order")
    assert query(seeded_dsn, kept) == query(other, kept)


def test_a_set_stop_event_ends_the_run_at_once(seeded_dsn):
    stop = threading.Event()
    stop.set()
    assert simulate.run(seeded_dsn, rate=10, stop=stop).changes == 0


def test_cli_runs_for_its_duration_and_prints_a_summary(seeded_dsn, capsys):
    assert main(["simulate", "--source-dsn", seeded_dsn, "--rate", "100", "--duration", "1",
                 "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "changes in" in out and "changes/s" in out


def test_an_unseeded_source_is_a_clear_error(totesys_dsn):
    with pytest.raises(ConfigError, match="no totesys reference rows"):
        simulate.run(totesys_dsn, duration=1)


def test_a_source_that_ends_its_sessions_part_way_is_one_line_and_exit_2(seeded_dsn, capsys):
    """The source restarting under the simulation: the command says so instead of a traceback."""
    def cut_off() -> None:
        time.sleep(0.5)
        query(seeded_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    threading.Thread(target=cut_off, daemon=True).start()
    assert main(["simulate", "--source-dsn", seeded_dsn, "--rate", "100", "--duration", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("totes-cdc: error: simulating traffic on the source: ")
    assert len(err.splitlines()) == 1


def test_a_non_positive_rate_is_refused(seeded_dsn):
    with pytest.raises(ConfigError, match="--rate must be positive"):
        simulate.run(seeded_dsn, rate=0)


def test_the_command_stops_cleanly_on_sigterm(seeded_dsn):
    env = {**os.environ, "TOTES_CDC_SOURCE_DSN": seeded_dsn}
    process = subprocess.Popen([sys.executable, "-m", "totes_ops", "simulate", "--rate", "20"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while query(seeded_dsn, "SELECT count(*) FROM sales_order")[0][0] == 11187:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "changes in" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_with_every_payment_paid_a_new_order_is_made_instead(seeded_dsn):
    conn, side = psycopg2.connect(seeded_dsn), psycopg2.connect(seeded_dsn)
    try:
        simulator = simulate.Simulator(conn, side, seed=5)
        stats = simulate.SimulationStats()
        for _ in range(40):
            simulator.unpaid.clear()
            simulator.step(stats)
        simulator.finish(stats)
        assert stats.payments_paid == stats.sales_orders_cancelled == stats.payments_removed == 0
        assert stats.sales_orders + stats.purchase_orders + stats.edits == stats.transactions
    finally:
        side.close()
        conn.close()


def test_a_long_transaction_writes_before_other_commits_and_commits_after_them(seeded_dsn):
    """Its rows get a transaction id older than rows committed while it was open, and stay
    invisible to other sessions until it commits."""
    conn, side = psycopg2.connect(seeded_dsn), psycopg2.connect(seeded_dsn)
    try:
        simulator = simulate.Simulator(conn, side, seed=2)
        stats = simulate.SimulationStats()
        while simulator.held is None:
            simulator.step(stats)
        held, opened_at = simulator.held.payment_id, stats.transactions
        assert query(seeded_dsn, "SELECT count(*) FROM payment WHERE payment_id = %s", (held,)) == [(0,)]
        while simulator.held is not None:
            simulator.step(stats)
        assert stats.transactions - opened_at - 1 >= simulate.HELD_FOR[0]
        assert stats.long_transactions == 1
        newest_other = max(simulator.unpaid[:-1])
        xmins = dict(query(seeded_dsn, "SELECT payment_id, xmin::text::bigint FROM payment "
                                       "WHERE payment_id IN (%s, %s)", (held, newest_other)))
        assert newest_other > held and xmins[held] < xmins[newest_other]
    finally:
        side.close()
        conn.close()


def test_a_cancelled_sales_order_goes_with_its_transaction_and_payment(seeded_dsn):
    conn, side = psycopg2.connect(seeded_dsn), psycopg2.connect(seeded_dsn)
    try:
        simulator = simulate.Simulator(conn, side, seed=1)
        payment_id, (transaction_id, sales_order_id) = min(
            (p, chain) for p, chain in simulator.chains.items() if chain[1] is not None)
        simulator.unpaid[:] = [payment_id]
        stats = simulate.SimulationStats()
        with conn.cursor() as cur:
            assert simulator._cancel(cur, stats) == 3
        conn.commit()
    finally:
        side.close()
        conn.close()
    assert stats.sales_orders_cancelled == 1
    assert query(seeded_dsn, "SELECT (SELECT count(*) FROM payment WHERE payment_id = %s), "
                             "(SELECT count(*) FROM transaction WHERE transaction_id = %s), "
                             "(SELECT count(*) FROM sales_order WHERE sales_order_id = %s)",
                 (payment_id, transaction_id, sales_order_id)) == [(0, 0, 0)]

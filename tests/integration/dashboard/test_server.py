"""The dashboard server against a real warehouse: the page, the live stream, bad requests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import psycopg2
import pytest

from dashboard import queries, server
from tests.integration.dashboard import warehouse_rows
from totes_cdc.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def dashboard(warehouse_dsn, tmp_path, aws):
    warehouse_rows.create(warehouse_dsn)
    warehouse_rows.sample(warehouse_dsn)
    srv, threads = server.start(warehouse_dsn, port=0, state_dir=tmp_path)
    yield f"http://127.0.0.1:{srv.server_port}"
    server.stop(srv, threads)


class Events:
    """Reads a Server-Sent Events stream: (event, data) pairs."""

    def __init__(self, url: str) -> None:
        self.response = urllib.request.urlopen(url, timeout=20)

    def next(self, name: str) -> dict:
        event = None
        for raw in self.response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == name:
                return json.loads(line[6:])
        raise AssertionError(f"stream ended before a {name} event")

    def close(self) -> None:
        self.response.close()


def test_page_and_its_files_are_served(dashboard):
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        with urllib.request.urlopen(dashboard + path, timeout=10) as r:
            assert r.headers["Content-Type"].startswith(kind)
            assert r.read()
    with urllib.request.urlopen(dashboard + "/healthz", timeout=10) as r:
        assert r.read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(dashboard + "/nope", timeout=10)
    assert missing.value.code == 404


def test_stream_pushes_sales_for_its_filters_then_each_new_fact(dashboard, warehouse_dsn):
    events = Events(dashboard + "/events")
    try:
        first = events.next("sales")
        assert first["totals"]["orders"] == 6
        assert first["totals"]["units"] == 7500
        assert first["totals"]["value"] == {"GBP": 3500.0, "USD": 6250.0, "EUR": 9000.0}
        assert [i["label"] for i in first["by_country"]] == ["Norway", "Chile", "Portugal"]
        assert [i["label"] for i in first["top_designs"]] == ["Steel", "Cotton"]
        assert first["top_departments"][0] == {"label": "Sales", "orders": 3, "units": 4500,
                                               "value": 11250.0}
        assert first["options"]["currency"] == ["EUR", "GBP", "USD"]
        assert first["bucket"] == "month"
        months = first["buckets"]
        # The order 13 months ago, one slot for the empty months after it, then the last quarter.
        assert months[1] == queries.GAP and len(months) in (5, 6)
        assert months[0] < months[2] < months[-1]
        assert months[-1] == date.today().replace(day=1).isoformat() + "T00:00:00"
        warehouse_rows.add_sale(warehouse_dsn, 7, units=77)
        second = events.next("sales")
        assert second["totals"]["orders"] == 7
        assert second["version"] > first["version"]
    finally:
        events.close()


def test_a_page_refreshes_at_most_once_a_poll_whatever_the_commit_rate(dashboard, warehouse_dsn):
    """Commits far faster than the watcher polls are coalesced: one refresh per poll that saw a
    change, each with everything committed before it."""
    events = Events(dashboard + "/events")
    try:
        events.next("sales")
        commits = 40

        def write() -> None:
            for order_id in range(100, 100 + commits):
                warehouse_rows.add_sale(warehouse_dsn, order_id)

        writer = threading.Thread(target=write)
        started = time.monotonic()
        writer.start()
        refreshes = 0
        while True:
            refreshes += 1
            if events.next("sales")["totals"]["orders"] == 6 + commits:
                break
        elapsed = time.monotonic() - started
        writer.join()
    finally:
        events.close()
    assert refreshes <= elapsed / server.POLL_SECONDS + 2 < commits


def test_the_live_view_has_the_last_15_minutes_by_second_and_minute(dashboard, warehouse_dsn):
    """New orders (inserts) placed in the last 15 minutes; the sample's snapshot rows and an order
    placed 20 minutes ago are history, not live."""
    warehouse_rows.add_sale(warehouse_dsn, 8, units=99, latency=timedelta(minutes=20))
    warehouse_rows.add_sale(warehouse_dsn, 9, units=50, currency_id=2,
                            latency=timedelta(milliseconds=1500))
    warehouse_rows.add_sale(warehouse_dsn, 10, units=70)
    events = Events(dashboard + "/events")
    try:
        live = events.next("live")
    finally:
        events.close()
    assert live["totals"] == {"orders": 2, "units": 120, "value": {"USD": 125.0, "GBP": 175.0}}
    assert len(live["seconds"]) == queries.LIVE_SECONDS and sum(live["per_second"]) == 2
    assert len(live["minutes"]) == queries.LIVE_MINUTES
    assert live["minutes"][-1][:16] == live["now"][:16] and live["seconds"][-1][:19] == live["now"][:19]
    assert sum(row["orders"] for row in live["per_minute"]) == 2
    assert {row["bucket"] for row in live["per_minute"]} <= set(live["minutes"])
    assert [o["order"] for o in live["newest"]] == [10, 9]
    late = live["newest"][1]
    assert late["units"] == 50 and late["currency"] == "USD" and late["design"] == "Steel"
    assert 1400 <= late["latency_ms"] <= 5000


def test_live_is_pushed_again_as_its_window_slides(dashboard, monkeypatch):
    monkeypatch.setattr(server, "LIVE_SECONDS", 0.5)
    events = Events(dashboard + "/events")
    try:
        first = events.next("live")
        second = events.next("live")                     # no new fact: the clock moved
    finally:
        events.close()
    assert second["now"] > first["now"]


def test_a_dimension_change_alone_is_pushed(dashboard, warehouse_dsn):
    events = Events(dashboard + "/events")
    try:
        assert "Zebra" not in events.next("sales")["options"]["design"]
        conn = psycopg2.connect(warehouse_dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("INSERT INTO dim_design VALUES (99, 'Zebra', '/d', 'z.json')")
        finally:
            conn.close()
        assert "Zebra" in events.next("sales")["options"]["design"]
    finally:
        events.close()


@pytest.mark.parametrize(("query", "orders", "units"), [
    ("currency=GBP", 2, 1400),
    ("country=Chile&design=Cotton", 2, 2400),
    ("department=Purchasing&range=7d", 2, 1000),
    ("range=today", 1, 1000),
    ("range=30d", 3, 2000),
    ("range=365d", 5, 7000),
    ("currency=JPY", 0, 0),
    ("range=7d&design=Steel", 2, 1600),
])
def test_filters_narrow_what_is_pushed(dashboard, query, orders, units):
    events = Events(f"{dashboard}/events?{query}")
    try:
        data = events.next("sales")
    finally:
        events.close()
    assert (data["totals"]["orders"], data["totals"]["units"]) == (orders, units)


def test_time_buckets_follow_the_range(dashboard):
    events = Events(dashboard + "/events?range=today")
    try:
        data = events.next("sales")
    finally:
        events.close()
    assert data["bucket"] == "hour"
    assert data["buckets"] == [f"{date.today().isoformat()}T10:00:00"]
    assert data["over_time"] == [{"label": "GBP", "orders": 1, "units": 1000, "value": 2500.0,
                                  "bucket": f"{date.today().isoformat()}T10:00:00"}]


def test_a_deleted_order_leaves_the_current_view(dashboard, warehouse_dsn):
    warehouse_rows.add_sale(warehouse_dsn, 1, op="d")
    events = Events(dashboard + "/events")
    try:
        assert events.next("sales")["totals"]["orders"] == 5
    finally:
        events.close()


@pytest.mark.parametrize("query", ["range=forever", "currency=" + "x" * 201])
def test_bad_filters_are_answered_400(dashboard, query):
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(f"{dashboard}/events?{query}", timeout=10)
    assert bad.value.code == 400


def test_health_is_pushed_with_unknowns_not_crashes(dashboard, warehouse_dsn):
    warehouse_rows.add_sale(warehouse_dsn, 8, latency=timedelta(milliseconds=300))
    events = Events(dashboard + "/events")
    try:
        health = events.next("health")
    finally:
        events.close()
    assert health["slot_lag_bytes"] is None
    assert "slot_lag_bytes" in health["unknown"]
    assert health["last_loaded_at"] is not None


def test_a_warehouse_without_the_schema_is_reported_on_the_page(warehouse_server, tmp_path, aws):
    empty = warehouse_server.create_database("wh_empty_dashboard_" + tmp_path.name[-8:].lower())
    srv, threads = server.start(empty, port=0, state_dir=tmp_path)
    try:
        events = Events(f"http://127.0.0.1:{srv.server_port}/events")
        try:
            problem = events.next("problem")
        finally:
            events.close()
        assert "fact_sales_order" in problem["message"]
        warehouse_rows.create(empty)
        events = Events(f"http://127.0.0.1:{srv.server_port}/events")
        try:
            assert events.next("sales")["totals"]["orders"] == 0
        finally:
            events.close()
    finally:
        server.stop(srv, threads)


def test_a_port_in_use_is_a_clear_error(warehouse_dsn, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use"):
            server.start(warehouse_dsn, port=port, state_dir=tmp_path)


def test_serve_runs_until_stopped(warehouse_dsn, tmp_path, capsys, aws):
    warehouse_rows.create(warehouse_dsn)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(warehouse_dsn,),
                              kwargs={"port": 0, "state_dir": Path(tmp_path), "stop_event": stop})
    thread.start()
    try:
        for _ in range(100):
            if "dashboard: http://127.0.0.1:" in capsys.readouterr().out:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_the_command_serves_until_sigterm_then_exits_cleanly(warehouse_dsn, aws_env, tmp_path):
    warehouse_rows.create(warehouse_dsn)
    env = {**aws_env, "TOTES_CDC_WAREHOUSE_DSN": warehouse_dsn, "TOTES_CDC_STATE_DIR": str(tmp_path)}
    env.pop("TOTES_CDC_SOURCE_DSN", None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "totes_ops", "dashboard", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == f"dashboard: http://127.0.0.1:{port}/"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.read() == b"ok\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_failing_query_is_reported_and_the_stream_goes_on(dashboard, warehouse_dsn):
    events = Events(dashboard + "/events")
    try:
        events.next("sales")
        conn = psycopg2.connect(warehouse_dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("ALTER TABLE dim_location RENAME COLUMN country TO nation")
        finally:
            conn.close()
        warehouse_rows.add_sale(warehouse_dsn, 60)
        assert "query failed" in events.next("problem")["message"]
    finally:
        events.close()


def test_an_address_it_cannot_listen_on_is_a_clear_error(warehouse_dsn, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1:0"):
        server.start(warehouse_dsn, host="192.0.2.1", port=0, state_dir=tmp_path)

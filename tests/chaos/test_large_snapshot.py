"""kill -9 of capture during the initial snapshot of a large table while rows of it are deleted.

The source has the totesys rows plus ``$TOTES_CDC_CHAOS_SNAPSHOT_ROWS`` more sales orders (50,000
by default, so the suite stays within its time bound; 500,000 or more for the acceptance run). A
fresh stack starts on it; while capture reads sales_order in its snapshot, about 100 of those rows
are deleted a second, capture is killed twice mid-table (each restart resumes the snapshot at a new
position), and simulated traffic runs. Then reconcile, with history, must pass.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.chaos.conftest import (
    RECONCILE_TIMEOUT,
    SEED,
    SETTINGS_OVERRIDES,
    ChaosStack,
    Scenario,
    finish_scenario,
    new_scenario,
    short_wal_sender_timeout,
)
from tests.chaos.proxy import FaultProxy
from tests.conftest import SEED_DIR
from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_ops.stack import seed as seeding
from totes_ops.stack.ports import free_port
from totes_ops.stack.postgres import LocalPostgres, make_base_dir
from totes_ops.stack.up import Stack, StackOptions, new_stack, start

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

SNAPSHOT_ROWS = int(os.environ.get("TOTES_CDC_CHAOS_SNAPSHOT_ROWS", "50000"))
TABLE = "sales_order"
KILL_AT = (0.25, 0.6)  # kill capture when its snapshot of TABLE has read these shares of the rows
# Ranges far smaller than the table (progress is saved per range), read one at a time: the lake
# snapshot reads this table in seconds, and the kills must land in the middle of it.
CAPTURE_OVERRIDES = {"snapshot_chunk_rows": max(SNAPSHOT_ROWS // 20, 500), "snapshot_workers": 1}
DELETES_PER_TRANSACTION = 5
DELETE_TRANSACTIONS_PER_SECOND = 20
# The pipeline loads the snapshot at a few thousand rows a second here, reconcile reads it whole.
CATCH_UP_TIMEOUT = RECONCILE_TIMEOUT + SNAPSHOT_ROWS / 1000


@dataclass
class LargeSource:
    """The source server with the large table, and the stack (not started) that captures it."""

    server: LocalPostgres
    dsn: str
    stack: Stack
    proxy: FaultProxy
    first_bulk_id: int
    seeded_with: str
    chaos: ChaosStack | None = None


@pytest.fixture(scope="module")
def large_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LargeSource]:
    base = make_base_dir()
    server = LocalPostgres(base / "source", logical=True)
    server.init()
    server.start()
    emulator_port = free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{emulator_port}", seed=SEED)
    proxy.start()
    patch = pytest.MonkeyPatch()
    stack: Stack | None = None
    large: LargeSource | None = None
    try:
        dsn = server.create_database("totesys")
        seeded_with, first_bulk_id = _seed(dsn)
        short_wal_sender_timeout(dsn)
        patch.setenv(OVERRIDES_ENV, json.dumps({**SETTINGS_OVERRIDES, "capture": CAPTURE_OVERRIDES}))
        settings.cache_clear()
        stack = new_stack(StackOptions(
            state_dir=tmp_path_factory.mktemp("chaos-large") / "state", source_dsn=dsn, seed="none",
            emulator_port=emulator_port, components=("capture", "process", "load"),
            component_aws_endpoint=proxy.endpoint))
        large = LargeSource(server, dsn, stack, proxy, first_bulk_id, seeded_with)
        yield large
    finally:
        if large is not None and large.chaos is not None:
            large.chaos.close()
        elif stack is not None:
            stack.close()
        proxy.stop()
        server.stop(mode="immediate")
        patch.undo()
        settings.cache_clear()
        shutil.rmtree(base, ignore_errors=True)


def _seed(dsn: str) -> tuple[str, int]:
    """The totesys schema and rows (real when present), then SNAPSHOT_ROWS more sales orders made
    from the existing ones; which seed, and the first added id."""
    conn = psycopg2.connect(dsn)
    try:
        seeding.create_schema(conn)
        if seeding.real_data_available(SEED_DIR):
            seeding.load_totesys(conn, SEED_DIR)
            seeded_with = "totesys"
        else:
            from totes_ops.stack.synthetic import load_synthetic

            load_synthetic(conn)
            seeded_with = "synthetic"
        with conn, conn.cursor() as cur:
            cur.execute("SELECT max(sales_order_id), count(*) FROM sales_order")
            first, existing = cur.fetchone()
            cur.execute(
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, "
                "counterparty_id, units_sold, unit_price, currency_id, agreed_delivery_date, "
                "agreed_payment_date, agreed_delivery_location_id) "
                "SELECT s.created_at + make_interval(secs => g), s.last_updated + make_interval(secs => g), "
                "s.design_id, s.staff_id, s.counterparty_id, 1001 + g %% 98999, s.unit_price, "
                "s.currency_id, s.agreed_delivery_date, s.agreed_payment_date, "
                "s.agreed_delivery_location_id FROM generate_series(1, %s) AS g "
                "JOIN sales_order s ON s.sales_order_id = 1 + g %% %s ORDER BY g",
                (SNAPSHOT_ROWS, min(existing, 10_000)))
        return seeded_with, int(first) + 1
    finally:
        conn.close()


@dataclass
class Deleter:
    """Deletes random added sales orders, a few per transaction, in a thread, until stopped."""

    dsn: str
    ids: range
    rng: random.Random
    deleted: int = 0
    transactions: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-deleter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            while not self._stop.wait(1 / DELETE_TRANSACTIONS_PER_SECOND):
                victims = [self.rng.choice(self.ids) for _ in range(DELETES_PER_TRANSACTION)]
                with conn.cursor() as cur:
                    cur.execute("DELETE FROM sales_order WHERE sales_order_id = ANY(%s)", (victims,))
                    self.deleted += cur.rowcount
                self.transactions += 1
        except psycopg2.Error as exc:
            self.errors.append(str(exc).strip())
        finally:
            conn.close()


def _snapshot_progress(run_dir: Path) -> tuple[int, bool] | None:
    """(rows in the lake in saved ranges, complete) of TABLE in capture's snapshot state; None
    before capture saved any."""
    path = run_dir / "capture" / f"{settings()['capture']['slot']}.json"
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))["tables"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    progress = tables.get(f"public.{TABLE}")
    if progress is None:
        return None
    return sum(int(r["rows"]) for r in progress["done"].values()), progress["marker"] is not None


def _wait_for_share(run_dir: Path, share: float, total: int, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = _snapshot_progress(run_dir)
        if progress is not None:
            rows, done = progress
            assert not done, f"capture finished reading {TABLE} before it read {share:.0%} of it"
            if rows >= share * total:
                return rows
        time.sleep(0.05)
    raise AssertionError(f"capture did not read {share:.0%} of {TABLE} within {timeout:.0f} s")


@pytest.fixture
def recorded(request: pytest.FixtureRequest, chaos_results: dict[str, Any]) -> Iterator[list[Scenario]]:
    """Scenarios the test makes itself (its stack starts inside it), recorded with its outcome."""
    scenarios: list[Scenario] = []
    yield scenarios
    for scenario in scenarios:
        finish_scenario(request, scenario, chaos_results)


def test_kill_9_of_capture_during_a_large_snapshot_while_its_rows_are_deleted(
        request: pytest.FixtureRequest, large_source: LargeSource, recorded: list[Scenario]) -> None:
    """kill -9 of capture twice in the initial snapshot of a large sales_order whose rows are deleted"""
    source = large_source
    rng = random.Random(SEED)
    total = SNAPSHOT_ROWS + source.first_bulk_id - 1
    deleter = Deleter(source.dsn, range(source.first_bulk_id, source.first_bulk_id + SNAPSHOT_ROWS),
                      random.Random(rng.randrange(1 << 16)))
    deleter.start()
    began = time.monotonic()
    try:
        start(source.stack)
        chaos = source.chaos = ChaosStack(source.stack, source.proxy, rng)
        scenario = new_scenario(request, chaos)
        recorded.append(scenario)
        scenario.note(f"source: {source.seeded_with} seed plus {SNAPSHOT_ROWS:,} sales orders "
                      f"({total:,} in sales_order before the deletes began)")
        with chaos.traffic() as traffic:
            for share in KILL_AT:
                _wait_for_share(source.stack.run_dir, share, total)
                # Anywhere in the next ranges: read, put in the lake, progress not yet saved.
                time.sleep(rng.uniform(0, 0.3))
                rows = (_snapshot_progress(source.stack.run_dir) or (0, False))[0]
                pid = chaos.kill("capture")
                scenario.fault(f"kill -9 capture (pid {pid}) with {rows:,} of {total:,} {TABLE} rows "
                               f"read in its snapshot (progress saved), {deleter.deleted:,} rows "
                               "deleted so far")
            deadline = time.monotonic() + 300
            while (progress := _snapshot_progress(source.stack.run_dir)) is None or not progress[1]:
                assert time.monotonic() < deadline, f"capture did not finish reading {TABLE}"
                time.sleep(0.2)
            scenario.note(f"capture finished reading {TABLE} {time.monotonic() - began:.0f} s after "
                          "the stack started")
            time.sleep(2)
    finally:
        deleter.stop()
    assert not deleter.errors, deleter.errors
    scenario.source_change(f"{TABLE} rows deleted during the snapshot", deleter.deleted)
    scenario.source_change(f"{TABLE} rows in the snapshot's table at the start", total)
    totals = traffic.totals
    scenario.source_change("simulated changes", totals.changes)
    scenario.source_change("simulated transactions", totals.transactions)
    faults_over = time.monotonic()
    report = chaos.wait_reconciled(CATCH_UP_TIMEOUT)
    scenario.record["catch_up_seconds"] = round(time.monotonic() - faults_over, 1)
    scenario.judge(report)
    assert chaos.restarts()["capture"] >= len(KILL_AT)

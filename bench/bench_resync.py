"""Resync of a 1,000,000-row table under 200 changes/s of live traffic, on the local stack.

A source PostgreSQL server is seeded with the real totesys data (or the synthetic seed when it is
absent) plus ROWS more ``sales_order`` rows, made by SQL; ``totes_ops.stack.up`` then runs the
pipeline against it (capture, process, load and dashboard as their own OS processes, the AWS
emulator), and the initial snapshot is waited for in the warehouse and both databases vacuumed.
Then, with the traffic and
latency machinery of ``bench.bench_pipeline`` (windows of WINDOW_SECONDS of pgbench single-row
sales-order inserts at RATE per second, each drained before the next; latency = ``loaded_at -
source_commit_ts`` of the window's inserted orders in fact_sales_order):

- reference: REPEATS windows at RATE changes/s with no resync;
- resync: ``totes-cdc resync --table public.sales_order`` started (its own process, as an operator
  runs it), windows at RATE back to back until the resync process has ended and the loader has
  applied its completion marker (every file of the read in, ghost rows swept); the windows that
  began before then count;
- afterwards, traffic stopped and drained: ``reconcile`` (current state of every table) must find
  0 differences.

Goal (issue 14): the median p99 of the windows during the resync within 2x the reference's.
``BENCH_RESYNC_ROWS`` shrinks the table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from bench.bench_pipeline import WINDOW_SECONDS, Window, _insert_script, _query, _window, settle
from totes_ops.stack import seed
from totes_ops.stack.emulator import client_env
from totes_ops.stack.postgres import LocalPostgres, make_base_dir
from totes_ops.stack.supervisor import child_env, totes_cdc_command
from totes_ops.stack.up import PIPELINE, Stack, StackOptions, new_stack, start
from warehouse_loader.reconcile import reconcile

ROWS = int(os.environ.get("BENCH_RESYNC_ROWS", "1000000"))
RATE = 200
REPEATS = 3
TABLE = "public.sales_order"
SNAPSHOT_TIMEOUT_SECONDS = 1800.0
RESYNC_TIMEOUT_SECONDS = 1800.0
GOAL_RATIO = 2.0


def _add_sales_orders(dsn: str, rows: int) -> None:
    """``rows`` more sales orders, each referencing existing reference rows, in one statement."""
    _query(dsn, """
        WITH refs AS (SELECT (SELECT array_agg(design_id) FROM design) d,
                             (SELECT array_agg(staff_id) FROM staff) s,
                             (SELECT array_agg(counterparty_id) FROM counterparty) c,
                             (SELECT array_agg(currency_id) FROM currency) cu,
                             (SELECT array_agg(address_id) FROM address) a)
        INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id,
            units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date,
            agreed_delivery_location_id)
        SELECT t, t, d[1 + g %% cardinality(d)], s[1 + g %% cardinality(s)],
               c[1 + g %% cardinality(c)], 1 + g %% 1000, 2.50 + g %% 300,
               cu[1 + g %% cardinality(cu)], (t::date + 20)::text, (t::date + 10)::text,
               a[1 + g %% cardinality(a)]
        FROM refs, generate_series(1, %(rows)s) g,
             LATERAL (SELECT timestamp '2022-01-01' + g * interval '10 seconds' AS t) x""",
           {"rows": rows})
    _query(dsn, "ANALYZE sales_order")  # reltuples: the estimate resync's progress shows


@contextlib.contextmanager
def _stack(base: Path) -> Iterator[Stack]:
    source = LocalPostgres(base / "source", logical=True)
    source.init()
    source.start()
    try:
        dsn = source.create_database("source")
        conn = psycopg2.connect(dsn)
        try:
            seed.create_schema(conn)
            if seed.real_data_available():
                seed.load_totesys(conn)
            else:
                from totes_ops.stack.synthetic import load_synthetic

                load_synthetic(conn)
            conn.commit()
        finally:
            conn.close()
        _add_sales_orders(dsn, ROWS)
        stack = new_stack(StackOptions(state_dir=base / "state", source_dsn=dsn, seed="none",
                                       components=PIPELINE))
        try:
            start(stack)
            yield stack
        finally:
            stack.close()
    finally:
        source.stop()


def _source_rows(stack: Stack) -> int:
    return int(_query(stack.source_dsn, "SELECT count(*) FROM sales_order")[0][0])


def _reads_loaded(stack: Stack) -> int:
    """Complete reads of sales_order the loader has applied: one ghost sweep each, done at the
    read's completion marker once every file of the read is in (migration 019)."""
    return int(_query(stack.warehouse_dsn, "SELECT count(*) FROM mirror._ghost_sweeps "
                                           "WHERE source_table = %s", (TABLE.split(".")[1],))[0][0])


def _wait_snapshot(stack: Stack) -> float:
    """Seconds until the initial snapshot of sales_order is wholly in the warehouse."""
    begin = time.monotonic()
    while time.monotonic() - begin < SNAPSHOT_TIMEOUT_SECONDS:
        if _reads_loaded(stack) >= 1:
            return time.monotonic() - begin
        time.sleep(1.0)
    raise RuntimeError(f"the initial snapshot did not reach the warehouse in "
                       f"{SNAPSHOT_TIMEOUT_SECONDS:.0f} s; see {stack.run_dir / 'logs'}")


def _resync(stack: Stack) -> subprocess.Popen[bytes]:
    assert stack.emulator is not None
    env = child_env({**client_env(stack.emulator.endpoint), "TOTES_CDC_SOURCE_DSN": stack.source_dsn,
                     "TOTES_CDC_WAREHOUSE_DSN": stack.warehouse_dsn,
                     "TOTES_CDC_STATE_DIR": str(stack.run_dir)})
    with (stack.run_dir / "logs" / "resync.log").open("wb") as log:
        return subprocess.Popen(totes_cdc_command("resync", "--table", TABLE), env=env, stdout=log,
                                stderr=subprocess.STDOUT)


@dataclass
class Results:
    seeded: str = ""
    rows: int = 0
    snapshot_s: float = 0.0
    settle_s: float = 0.0
    reference: list[Window] = field(default_factory=list)
    during: list[Window] = field(default_factory=list)
    resync_s: float = 0.0
    loaded_s: float = 0.0
    exit_code: int | None = None
    differences: int = -1
    reconcile_tables: list[str] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


def measure(base: Path) -> Results:
    results = Results(seeded="totesys" if seed.real_data_available() else "synthetic")
    with _stack(base) as stack:
        results.rows = _source_rows(stack)
        results.snapshot_s = _wait_snapshot(stack)
        results.settle_s = settle(stack)
        script = _insert_script(stack, base)
        results.load.append(os.getloadavg()[0])
        for number in range(REPEATS):
            results.reference.append(_window(stack, script, RATE))
            print(f"   reference window {number + 1}: {results.reference[-1]}", flush=True)
        results.load.append(os.getloadavg()[0])
        begin = time.monotonic()
        process = _resync(stack)
        while time.monotonic() - begin < RESYNC_TIMEOUT_SECONDS:
            window = _window(stack, script, RATE)
            results.during.append(window)
            print(f"   window during the resync: {window}", flush=True)
            if results.exit_code is None and process.poll() is not None:
                results.exit_code = process.returncode
                results.resync_s = time.monotonic() - begin
            if results.exit_code is not None and _reads_loaded(stack) >= 2:
                results.loaded_s = time.monotonic() - begin
                break
        else:
            process.kill()
            raise RuntimeError(f"the resync did not end in {RESYNC_TIMEOUT_SECONDS:.0f} s; see "
                               f"{stack.run_dir / 'logs' / 'resync.log'}")
        results.load.append(os.getloadavg()[0])
        report = reconcile(stack.source_dsn, stack.warehouse_dsn)
        results.differences = sum(t.differences for t in report.tables)
        results.reconcile_tables = [f"{t.table} {t.differences}" for t in report.tables if t.differences]
    return results


def _p99(windows: list[Window]) -> float:
    values = [w.p99 for w in windows if not math.isnan(w.p99)]
    return statistics.median(values) if values else math.nan


def render(r: Results) -> str:
    reference, during = _p99(r.reference), _p99(r.during)
    ratio = during / reference if reference else math.nan
    rows = [f"| {label} | {len(ws)} | {statistics.median(w.achieved for w in ws):,.0f} | "
            f"{statistics.median(w.p50 for w in ws):,.0f} | {_p99(ws):,.0f} | "
            f"{max(w.max_ms for w in ws):,.0f} |"
            for label, ws in (("no resync (reference)", r.reference), ("during the resync", r.during))
            if ws]
    return "\n".join([
        f"## Resync under live traffic (as of {dt.date.today().isoformat()})",
        "",
        f"The local stack (`totes_ops.stack.up`, each component its own OS process) against a "
        f"source seeded with the {'real totesys data' if r.seeded == 'totesys' else 'synthetic data'}"
        f" and {ROWS:,} more `sales_order` rows ({r.rows:,} sales orders in all). "
        f"Initial snapshot to the warehouse: {r.snapshot_s:.0f} s, then `VACUUM ANALYZE` and "
        f"`CHECKPOINT` of both databases ({r.settle_s:.0f} s), so that no window measures "
        "autovacuum working through the rows just written. Live traffic: pgbench "
        f"single-row sales-order inserts at {RATE}/s in windows of {WINDOW_SECONDS:.0f} s, each "
        "drained before the next (the machinery of the pipeline benchmark); latency = `loaded_at - "
        "source_commit_ts` of each window's inserted orders, in ms; per row, medians over the "
        "windows (max: the largest). The resync: `totes-cdc resync --table public.sales_order` "
        f"started after the reference windows; it ended (exit {r.exit_code}) after {r.resync_s:.0f} s "
        f"and the loader had applied its completion marker after {r.loaded_s:.0f} s; the windows "
        "that began before that "
        f"count as during. Load average (1 min) before, between and after: "
        f"{', '.join(f'{x:.1f}' for x in r.load)} (2 shared cores: expect noise).",
        "",
        "| live traffic | windows | inserts/s made | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"p99 during the resync / without: **{ratio:.2f}** (goal <= {GOAL_RATIO:.0f}). "
        f"Reconcile after the resync, traffic drained: **{r.differences} differences**"
        + (f" ({', '.join(r.reconcile_tables)})." if r.reconcile_tables else " (goal 0)."),
        "",
    ])


def run() -> str:
    base = make_base_dir()
    try:
        return render(measure(base))
    finally:
        shutil.rmtree(base, ignore_errors=True)

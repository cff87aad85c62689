"""End-to-end latency (source commit -> warehouse ``loaded_at``) on the local stack, by rate and size.

One stack (``totes_ops.stack.up``: source and warehouse PostgreSQL, the emulator, and capture,
process, load and dashboard as their own OS processes) is seeded with the real totesys data (or the
synthetic seed when it is absent). Once the initial snapshot is in the warehouse, steady simulated
traffic (``totes_ops.simulate``, in as many processes as the rate needs) runs in windows of
WINDOW_SECONDS; after each window the pipeline is drained (every fact version of the window is in
the warehouse) before the next starts. Latency is ``loaded_at - source_commit_ts`` over the window's
non-snapshot fact rows. Each rate's figures are medians over its windows.

- 200 and 1,000 changes/s, REPEATS windows each;
- the search for the highest sustainable rate: rates in SEARCH_RATES, one window each, until one is
  not sustained (the simulator cannot make the rate, or the window does not drain within
  DRAIN_LIMIT_SECONDS, or its p99 passes the end-to-end latency alarm threshold);
- size: 200 changes/s again after FACT_ROWS fact rows are put straight into fact_sales_order;
- peak RSS (VmHWM, reset before each workload through /proc/<pid>/clear_refs) of each component.

The same run measures the reference configuration (``BEFORE``: the settings as they were before
tuning) at 200 changes/s on a second stack, through ``$TOTES_CDC_SETTINGS_OVERRIDES``.
``BENCH_PIPELINE_WINDOW`` (seconds) and ``BENCH_PIPELINE_FACT_ROWS`` shrink the run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_ops import simulate
from totes_ops.stack import seed
from totes_ops.stack.up import PIPELINE, Stack, StackOptions, new_stack, start
from warehouse_loader.derivation import FACTS

WINDOW_SECONDS = float(os.environ.get("BENCH_PIPELINE_WINDOW", "20"))
REPEATS = 3
STEADY_RATES = (200, 1_000)
SEARCH_RATES = (1_250, 1_500, 2_000, 3_000)
FACT_ROWS = int(os.environ.get("BENCH_PIPELINE_FACT_ROWS", "5000000"))
CHANGES_PER_PROCESS = 500  # what one simulator connection makes comfortably on this machine
DRAIN_LIMIT_SECONDS = 10.0
LOAD_TIMEOUT_SECONDS = 300.0
FACT_TABLES = tuple(fact.table for fact in FACTS)
# The settings the pipeline ran with before tuning (the reference of the before/after table).
BEFORE = {"capture": {"max_batch_delay_ms": 200}}


@dataclass
class Window:
    """One window of steady traffic and what the warehouse saw of it."""

    target: float
    achieved: float
    facts: int
    drain_s: float | None  # None: not drained within DRAIN_LIMIT_SECONDS
    p50: float = math.nan
    p95: float = math.nan
    p99: float = math.nan
    max_ms: float = math.nan


@dataclass
class Workload:
    name: str
    windows: list[Window] = field(default_factory=list)
    rss_mb: dict[str, tuple[float, float]] = field(default_factory=dict)  # peak, current

    def median(self, attr: str) -> float:
        values = [getattr(w, attr) for w in self.windows]
        values = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(values) if values else math.nan


def _query(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _facts_since(stack: Stack, since: dt.datetime) -> int:
    union = " UNION ALL ".join(
        f"SELECT count(*) AS n FROM {t} WHERE source_op <> 'r' AND source_commit_ts >= %(since)s"
        for t in FACT_TABLES)
    return int(_query(stack.warehouse_dsn, f"SELECT sum(n) FROM ({union}) f", {"since": since})[0][0])


def _wait_snapshot(stack: Stack) -> float:
    """Seconds from now until every source fact row of the seed is in the warehouse."""
    expected = sum(stack.counts.get(t.removeprefix("fact_"), 0) for t in FACT_TABLES)
    union = " UNION ALL ".join(f"SELECT count(*) AS n FROM {t} WHERE source_op = 'r'"
                               for t in FACT_TABLES)
    begin = time.monotonic()
    while time.monotonic() - begin < LOAD_TIMEOUT_SECONDS:
        if int(_query(stack.warehouse_dsn, f"SELECT sum(n) FROM ({union}) f")[0][0]) >= expected:
            return time.monotonic() - begin
        time.sleep(0.2)
    raise RuntimeError(f"the initial snapshot ({expected} fact rows) did not reach the warehouse "
                       f"in {LOAD_TIMEOUT_SECONDS:.0f} s; see {stack.run_dir / 'logs'}")


def _simulate(dsn: str, rate: float, seconds: float, seed_value: int) -> simulate.SimulationStats:
    return simulate.run(dsn, rate=rate, duration=seconds, seed=seed_value)


def _window(stack: Stack, pool: concurrent.futures.Executor, rate: float, number: int) -> Window:
    processes = max(1, math.ceil(rate / CHANGES_PER_PROCESS))
    since = _query(stack.warehouse_dsn, "SELECT now()")[0][0]
    futures = [pool.submit(_simulate, stack.source_dsn, rate / processes, WINDOW_SECONDS,
                           number * 100 + i) for i in range(processes)]
    runs = [f.result() for f in futures]
    ended = time.monotonic()
    expected = sum(r.fact_versions for r in runs)
    achieved = sum(r.changes for r in runs) / max(r.seconds for r in runs)
    drain: float | None = None
    while time.monotonic() - ended < DRAIN_LIMIT_SECONDS * 6:  # wait longer, to measure the rest
        if _facts_since(stack, since) >= expected:
            drain = time.monotonic() - ended
            break
        time.sleep(0.1)
    window = Window(rate, achieved, expected, drain if drain is not None and
                    drain <= DRAIN_LIMIT_SECONDS else None)
    union = " UNION ALL ".join(
        f"SELECT extract(epoch FROM loaded_at - source_commit_ts) * 1000 AS ms FROM {t} "
        "WHERE source_op <> 'r' AND source_commit_ts >= %(since)s" for t in FACT_TABLES)
    percentiles, top = _query(stack.warehouse_dsn, (
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms) "
        f"FROM ({union}) f"), {"since": since})[0]
    if percentiles is not None:
        window.p50, window.p95, window.p99 = (float(p) for p in percentiles)
        window.max_ms = float(top)
    return window


def _sustained(window: Window) -> bool:
    return (window.achieved >= 0.95 * window.target and window.drain_s is not None
            and window.p99 <= settings()["alarms"]["end_to_end_latency_p99_ms"])


# --- memory ---------------------------------------------------------------------------------------

def _reset_peaks(stack: Stack) -> None:
    assert stack.supervisor is not None
    for pid in stack.supervisor.pids().values():
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _rss(stack: Stack) -> dict[str, tuple[float, float]]:
    """Component -> (peak RSS MiB since the last reset, current RSS MiB)."""
    assert stack.supervisor is not None
    found = {}
    for name, pid in stack.supervisor.pids().items():
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        found[name] = tuple(int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS"))
    return found  # type: ignore[return-value]


def _workload(stack: Stack, pool: concurrent.futures.Executor, name: str, rate: float,
              windows: int) -> Workload:
    _reset_peaks(stack)
    workload = Workload(name)
    for number in range(windows):
        window = _window(stack, pool, rate, number)
        workload.windows.append(window)
        print(f"   {name} window {number + 1}: {window}", flush=True)
    workload.rss_mb = _rss(stack)
    return workload


# --- the 5M-row warehouse -------------------------------------------------------------------------

def _fill_facts(stack: Stack, rows: int) -> float:
    """Put ``rows`` historical fact versions into fact_sales_order with their own source positions
    (source_seq 0, never used by an event), for source rows the pipeline never touches."""
    begin = time.monotonic()
    _query(stack.warehouse_dsn, """
        INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, last_updated_date,
            last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, currency_id,
            design_id, agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id,
            source_op, source_lsn, source_seq, source_commit_ts, loaded_at)
        SELECT 1000000000 + g / 4, d::date, d::time, d::date, d::time, 1 + g %% 20, 1 + g %% 20,
            1 + g %% 1000, 2.50 + g %% 300, 1 + g %% 3, 1 + g %% 50, d::date + 10, d::date + 20,
            1 + g %% 30, CASE WHEN g %% 4 = 0 THEN 'c' ELSE 'u' END, g, 0, d, d
        FROM generate_series(1, %(rows)s) g,
             LATERAL (SELECT timestamptz '2022-01-01' + g * interval '10 seconds' AS d) t""",
           {"rows": rows})
    conn = psycopg2.connect(stack.warehouse_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE fact_sales_order")
    conn.close()
    return time.monotonic() - begin


# --- the stacks -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _stack(state_dir: Path, overrides: dict[str, Any] | None = None) -> Iterator[Stack]:
    previous = os.environ.get(OVERRIDES_ENV)
    if overrides:
        os.environ[OVERRIDES_ENV] = json.dumps(overrides)  # the components inherit it
    settings.cache_clear()
    stack = new_stack(StackOptions(state_dir=state_dir,
                                   seed="totesys" if seed.real_data_available() else "synthetic",
                                   components=PIPELINE))
    try:
        start(stack)
        yield stack
    finally:
        stack.close()
        if previous is None:
            os.environ.pop(OVERRIDES_ENV, None)
        else:
            os.environ[OVERRIDES_ENV] = previous
        settings.cache_clear()


@dataclass
class Results:
    seeded: str = ""
    seed_rows: int = 0
    snapshot_s: float = 0.0
    fill_s: float = 0.0
    snapshot_rss: dict[str, tuple[float, float]] = field(default_factory=dict)
    workloads: list[Workload] = field(default_factory=list)
    search: list[Window] = field(default_factory=list)
    before: Workload | None = None
    load: list[float] = field(default_factory=list)


def measure(root: Path) -> Results:
    results = Results()
    ctx = multiprocessing.get_context("spawn")
    processes = math.ceil(max(SEARCH_RATES) / CHANGES_PER_PROCESS)
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        with _stack(root / "before", BEFORE) as stack:
            _wait_snapshot(stack)
            results.before = _workload(stack, pool, "200/s, settings before tuning", 200, REPEATS)
        with _stack(root / "after") as stack:
            results.seeded, results.seed_rows = stack.seeded_with, sum(stack.counts.values())
            results.load.append(os.getloadavg()[0])
            results.snapshot_s = _wait_snapshot(stack)
            results.snapshot_rss = _rss(stack)
            for rate in STEADY_RATES:
                results.workloads.append(_workload(stack, pool, f"{rate:,}/s", rate, REPEATS))
                results.load.append(os.getloadavg()[0])
            _reset_peaks(stack)
            for rate in SEARCH_RATES:
                window = _window(stack, pool, rate, 0)
                print(f"   search: {window}", flush=True)
                results.search.append(window)
                if not _sustained(window):
                    break
            results.load.append(os.getloadavg()[0])
            results.workloads.append(Workload("highest-rate search", rss_mb=_rss(stack)))
            results.fill_s = _fill_facts(stack, FACT_ROWS)
            results.workloads.append(_workload(
                stack, pool, f"200/s, {FACT_ROWS:,} fact rows loaded", 200, REPEATS))
            results.load.append(os.getloadavg()[0])
    return results


# --- the section ----------------------------------------------------------------------------------

def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _latency_row(label: str, w: Workload) -> str:
    drains = [x.drain_s for x in w.windows]
    drain = ("not drained" if any(d is None for d in drains)
             else f"{statistics.median(d for d in drains if d is not None):.1f}")
    return (f"| {label} | {w.median('achieved'):,.0f} | {_ms(w.median('p50'))} | "
            f"{_ms(w.median('p95'))} | {_ms(w.median('p99'))} | {_ms(w.median('max_ms'))} | "
            f"{drain} | {len(w.windows)} |")


def render(r: Results) -> str:
    mapping = settings()["stream_processor_mapping"]
    loader = settings()["loader_mapping"]
    lines = [
        f"## End-to-end pipeline (as of {dt.date.today().isoformat()})",
        "",
        f"The local stack (`totes_ops.stack.up`, each component its own OS process) seeded with the "
        f"{'real totesys data' if r.seeded == 'totesys' else 'synthetic data'} ({r.seed_rows:,} "
        f"rows). Traffic: `totes_ops.simulate` (new orders with transaction and payment, payments "
        f"paid, reference edits), {CHANGES_PER_PROCESS:,} changes/s per simulator process, in "
        f"windows of {WINDOW_SECONDS:.0f} s; after each window the pipeline drains before the next. "
        "Latency = `loaded_at - source_commit_ts` of the window's fact rows (every insert and update "
        "of sales_order, purchase_order, payment), in ms. Each row: medians over its windows. "
        "Drain = seconds from the end of the traffic until the window's last fact row is loaded. "
        f"Load average (1 min) during the run: {', '.join(f'{x:.1f}' for x in r.load)} (the "
        "2 cores are shared with other work: expect noise).",
        "",
        f"Settings: capture max_batch_delay_ms {settings()['capture']['max_batch_delay_ms']}; "
        f"stream processor batch size {mapping['batch_size']}, batching window "
        f"{mapping['maximum_batching_window_seconds']} s; loader batch size {loader['batch_size']}.",
        "",
        f"Initial snapshot, source -> warehouse: {r.snapshot_s:.1f} s after `up` returned "
        f"(the stack's start-up, seeding and emulator resources come before that).",
        "",
        "| workload | changes/s made | p50 | p95 | p99 | max | drain s | windows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in r.workloads:
        if w.windows:
            lines.append(_latency_row(w.name, w))
    lines += [
        "",
        "Highest sustainable rate: one window per rate, rising until the simulator cannot make the "
        f"rate, the window does not drain within {DRAIN_LIMIT_SECONDS:.0f} s or its p99 passes "
        f"the alarm threshold ({settings()['alarms']['end_to_end_latency_p99_ms']:,} ms).",
        "",
        "| target changes/s | made | p50 | p95 | p99 | drain s | sustained |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w in r.search:
        lines.append(f"| {w.target:,.0f} | {w.achieved:,.0f} | {_ms(w.p50)} | {_ms(w.p95)} | "
                     f"{_ms(w.p99)} | {'-' if w.drain_s is None else f'{w.drain_s:.1f}'} | "
                     f"{'yes' if _sustained(w) else 'no'} |")
    sustained = [w.target for w in r.search if _sustained(w)] + [
        w.windows[0].target for w in r.workloads
        if w.windows and w is not r.workloads[-1] and all(_sustained(x) for x in w.windows)]
    lines += ["", f"Highest sustained: {max(sustained):,.0f} changes/s." if sustained else
              "No search rate was sustained.", ""]
    lines += [
        f"Size: {FACT_ROWS:,} fact rows put into fact_sales_order with SQL ({r.fill_s:.0f} s, "
        "then VACUUM ANALYZE) before the last workload; compare its row with the first.",
        "",
        "Peak RSS (MiB, VmHWM reset before each workload) of each component:",
        "",
        "| workload | " + " | ".join(PIPELINE) + " |",
        "|---|" + "---:|" * len(PIPELINE),
        "| initial snapshot (peak since start) | "
        + " | ".join(_mb(r.snapshot_rss, c) for c in PIPELINE) + " |",
    ]
    for w in r.workloads:
        lines.append(f"| {w.name} | " + " | ".join(_mb(w.rss_mb, c) for c in PIPELINE) + " |")
    if r.before is not None:
        after = r.workloads[0]
        lines += [
            "",
            "Before/after tuning, 200 changes/s, the same run (the reference stack ran with "
            f"`{json.dumps(BEFORE)}` through `$TOTES_CDC_SETTINGS_OVERRIDES`):",
            "",
            "| configuration | changes/s made | p50 | p95 | p99 | max | drain s | windows |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            _latency_row("before", r.before),
            _latency_row("after", after),
            "",
            f"p99 ratio after/before: {after.median('p99') / r.before.median('p99'):.2f}.",
        ]
    return "\n".join(lines) + "\n"


def _mb(rss: dict[str, tuple[float, float]], component: str) -> str:
    return f"{rss[component][0]:,.0f}" if component in rss else "-"


def run() -> str:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as root:
        return render(measure(Path(root)))

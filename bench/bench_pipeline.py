"""The whole local pipeline against issue 15's goals: source commit -> warehouse row, burst drain,
highest sustained rate, with where the time and the CPU go.

One stack (``totes_ops.stack.up``: source and warehouse PostgreSQL, the emulator, and capture,
process, load and dashboard as their own OS processes) is seeded with the real totesys data (or the
synthetic seed when it is absent). Traffic comes from a second process, ``pgbench``, as single-row
INSERT transactions of sales orders at a fixed rate (``--rate``), in windows of WINDOW_SECONDS;
after each window the pipeline drains (every order of the window is a fact row) before the next.

- steady: 200 and 2,000 changes/s, REPEATS windows each: p50/p95/p99 of ``loaded_at -
  source_commit_ts`` over the window's fact rows (goals: p99 <= 1 s at 200/s, <= 2 s at 2,000/s),
  and the latency waterfall of the files loaded in the window (``pipeline_latency``, as status
  shows it), so the slow hop has a name;
- burst: capture paused (SIGSTOP), BURST transactions committed, capture resumed: the transactions
  per second from its resumption to the last fact row, against ``pg_recvlogical`` reading the same
  WAL (a second pgoutput slot made just before the burst) in the same run (goal >= 0.25);
- the highest sustained rate: one window per rate in SEARCH_RATES until one is not sustained
  (pgbench cannot make 95 % of the rate, the window does not drain within DRAIN_LIMIT_SECONDS, or
  its p99 passes the end-to-end latency alarm threshold); goal >= 10,000 changes/s;
- size: 200 changes/s again after FACT_ROWS historical fact rows are put into fact_sales_order
  (the goal: its p99 within 20 % of the first 200/s row's);
- a candidate configuration (``CANDIDATE``: settings a tuning would change) at 200 and 2,000
  changes/s on a second stack in the same run, through ``$TOTES_CDC_SETTINGS_OVERRIDES``, beside
  the settings as they are.

For each window, the CPU seconds each process used (``/proc/<pid>/stat``; PostgreSQL with every
backend of its server) over the window's wall time: on 2 cores, where the time goes.
``BENCH_PIPELINE_WINDOW`` (seconds) and ``BENCH_PIPELINE_FACT_ROWS`` (0: no size workload) shrink
the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from bench import machine_cpu_seconds, process_cpu_seconds
from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_cdc.stages import STAGES
from totes_ops.stack import seed
from totes_ops.stack.up import PIPELINE, Stack, StackOptions, new_stack, start

WINDOW_SECONDS = float(os.environ.get("BENCH_PIPELINE_WINDOW", "20"))
REPEATS = 3
STEADY_RATES = (200, 2_000)
GOAL_P99_MS = {200: 1_000, 2_000: 2_000}
SEARCH_RATES = (4_000, 6_000, 8_000, 10_000, 12_000)
BURST = 40_000
FACT_ROWS = int(os.environ.get("BENCH_PIPELINE_FACT_ROWS", "5000000"))
DRAIN_LIMIT_SECONDS = 10.0
LOAD_TIMEOUT_SECONDS = 300.0
CLIENTS = 4  # pgbench connections: enough for 12,000 single-row transactions/s here
REFERENCE_SLOT = "bench_pipeline_reference"
# Settings measured against settings.json in the same run (the candidate/settings table).
CANDIDATE = {"stream_processor_mapping": {"maximum_batching_window_seconds": 1}}


@dataclass
class Window:
    """One window of steady traffic and what the warehouse saw of it."""

    target: float
    achieved: float
    orders: int
    drain_s: float | None  # None: not drained within DRAIN_LIMIT_SECONDS
    p50: float = math.nan
    p95: float = math.nan
    p99: float = math.nan
    max_ms: float = math.nan
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> p50, p99 ms
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # process -> on CPU, waiting


@dataclass
class Workload:
    name: str
    rate: float
    windows: list[Window] = field(default_factory=list)

    def median(self, attr: str) -> float:
        values = [getattr(w, attr) for w in self.windows]
        values = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    def median_stage(self, stage: str, which: int) -> float:
        values = [w.stages[stage][which] for w in self.windows if stage in w.stages]
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    def median_cpu(self, process: str) -> tuple[float, float]:
        values = [w.cpu.get(process, (0.0, 0.0)) for w in self.windows]
        return (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))


@dataclass
class Burst:
    transactions: int = 0
    commit_s: float = 0.0  # pgbench's time to commit them
    drain_s: float = math.nan  # capture resumed -> last fact row
    reference_s: float = math.nan  # pg_recvlogical over the same WAL
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.transactions / self.drain_s

    @property
    def reference_rate(self) -> float:
        return self.transactions / self.reference_s


def _query(dsn: str, statement: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


# --- traffic --------------------------------------------------------------------------------------

def _insert_script(stack: Stack, directory: Path) -> Path:
    """The pgbench script: one sales order per transaction, referencing rows the seed has."""
    design, staff, counterparty, currency, address = _query(stack.source_dsn, """
        SELECT (SELECT min(design_id) FROM design), (SELECT min(staff_id) FROM staff),
               (SELECT min(counterparty_id) FROM counterparty),
               (SELECT min(currency_id) FROM currency), (SELECT min(address_id) FROM address)""")[0]
    # The seed may load ids explicitly: new orders take ids after the highest.
    _query(stack.source_dsn, "SELECT setval(pg_get_serial_sequence('sales_order', 'sales_order_id'),"
                             " (SELECT max(sales_order_id) FROM sales_order))")
    script = directory / "insert_sales_order.sql"
    script.write_text(
        "\\set units random(1, 100000)\n"
        "INSERT INTO sales_order (last_updated, design_id, staff_id, counterparty_id, units_sold,"
        " unit_price, currency_id, agreed_delivery_date, agreed_payment_date,"
        f" agreed_delivery_location_id) VALUES (now(), {design}, {staff}, {counterparty}, :units,"
        f" 2.50, {currency}, '2026-12-01', '2026-12-15', {address});\n")
    return script


def _pgbench(stack: Stack, script: Path, *limits: str) -> tuple[int, float]:
    """Run pgbench with ``limits`` (rate, duration or count): (transactions, seconds)."""
    server = stack.servers[0]
    done = subprocess.run(
        [str(server.bindir / "pgbench"), "-n", "-f", str(script), "-c", str(CLIENTS), "-j", "2",
         *limits, stack.source_dsn],
        capture_output=True, text=True, check=True, timeout=600,
        env={**os.environ, "PGPASSWORD": server.password})
    transactions = int(re.search(r"actually processed: (\d+)", done.stdout)[1])  # type: ignore[index]
    tps = float(re.search(r"tps = ([\d.]+)", done.stdout)[1])  # type: ignore[index]
    return transactions, transactions / tps


# --- CPU by process -------------------------------------------------------------------------------

def _sched(pid: int) -> tuple[float, float]:
    """Seconds a process ran on a CPU (its threads that ended and its children it reaped included:
    /proc/<pid>/stat), and its live threads waited on a run queue for one (their schedstat).

    The reaped children count because PostgreSQL's short sessions are children of the postmaster:
    the status reading's new connection every 5 s, once it grew with the rate and the history, was
    the CPU that no column showed."""
    ran, waited = process_cpu_seconds(pid, reaped_children=True), 0.0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                waited += int(task.joinpath("schedstat").read_text().split()[1]) / 1e9
    return ran, waited


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _processes(stack: Stack) -> dict[str, list[int]]:
    assert stack.supervisor is not None and stack.emulator is not None
    found = {name: [pid] for name, pid in stack.supervisor.pids().items()}
    if stack.emulator.process is not None:
        found["emulator"] = [stack.emulator.process.pid]
    for name, server in zip(("source PostgreSQL", "warehouse PostgreSQL"), stack.servers, strict=False):
        postmaster = server.pid()
        if postmaster is not None:
            found[name] = [postmaster, *_children(postmaster)]
    return found


REST = "rest of the machine"  # the CPU column of what no process measured ran, and the steal


@contextlib.contextmanager
def _cpu(stack: Stack, into: dict[str, tuple[float, float]]) -> Iterator[None]:
    """Fill ``into`` with each process's time on a CPU and waiting for one, over the block's wall
    time (1.0 = one core's worth), and under REST the machine's busy time no process measured
    ran (the traffic generator, this benchmark, kernel threads) and the time the hypervisor
    stole."""
    def sample() -> dict[str, tuple[float, float]]:
        found = {}
        for name, pids in _processes(stack).items():
            times = [_sched(p) for p in pids]
            found[name] = (sum(t[0] for t in times), sum(t[1] for t in times))
        found[REST] = machine_cpu_seconds()
        return found

    before, began = sample(), time.monotonic()
    yield
    wall = time.monotonic() - began
    for name, (ran, waited) in sample().items():
        ran0, waited0 = before.get(name, (0.0, 0.0))
        into[name] = ((ran - ran0) / wall, (waited - waited0) / wall)
    busy, steal = into[REST]
    into[REST] = (busy - sum(ran for name, (ran, _) in into.items() if name != REST), steal)


# --- measurements ---------------------------------------------------------------------------------

# The orders committed since a window began, read through the loaded_at index (a row is loaded
# after its commit, so the second condition drops none): without it each poll of the drain was a
# scan of the whole fact history, which after the fill took both cores from the loader while it
# loaded the window's last orders, and so lengthened the sized row's tail.
_WINDOW_ORDERS = ("FROM fact_sales_order WHERE source_op = 'c' AND source_commit_ts >= %(since)s "
                  "AND loaded_at >= %(since)s")


def _orders_since(stack: Stack, since: dt.datetime) -> int:
    return int(_query(stack.warehouse_dsn, f"SELECT count(*) {_WINDOW_ORDERS}", {"since": since})[0][0])


def _wait_snapshot(stack: Stack) -> float:
    """Seconds from now until every source fact row of the seed is in the warehouse."""
    expected = stack.counts.get("sales_order", 0)
    begin = time.monotonic()
    while time.monotonic() - begin < LOAD_TIMEOUT_SECONDS:
        if int(_query(stack.warehouse_dsn, "SELECT count(*) FROM fact_sales_order "
                      "WHERE source_op = 'r'")[0][0]) >= expected:
            return time.monotonic() - begin
        time.sleep(0.2)
    raise RuntimeError(f"the initial snapshot ({expected} sales orders) did not reach the warehouse "
                       f"in {LOAD_TIMEOUT_SECONDS:.0f} s; see {stack.run_dir / 'logs'}")


def _wait_orders(stack: Stack, since: dt.datetime, expected: int, limit: float) -> float | None:
    """Seconds until ``expected`` orders committed since ``since`` are fact rows (None: not in
    ``limit`` seconds)."""
    begin = time.monotonic()
    while time.monotonic() - begin < limit:
        if _orders_since(stack, since) >= expected:
            return time.monotonic() - begin
        time.sleep(0.05)
    return None


def _waterfall(stack: Stack, since: dt.datetime) -> dict[str, tuple[float, float]]:
    """Each stage's p50 and p99 over the files loaded since ``since`` (as status reads them)."""
    columns = [sql.SQL("percentile_cont(0.5) WITHIN GROUP (ORDER BY {}), "
                       "percentile_cont(0.99) WITHIN GROUP (ORDER BY {})").format(
                           sql.Identifier(s.p50_column), sql.Identifier(s.p99_column))
               for s in STAGES]
    row = _query(stack.warehouse_dsn, sql.SQL(
        "SELECT {} FROM public.pipeline_latency WHERE loaded_at >= %s AND streamed_events > 0"
    ).format(sql.SQL(", ").join(columns)), (since,))[0]
    return {s.name: (math.nan if p50 is None else float(p50), math.nan if p99 is None else float(p99))
            for s, p50, p99 in zip(STAGES, row[::2], row[1::2], strict=True)}


def _window(stack: Stack, script: Path, rate: float) -> Window:
    since = _query(stack.source_dsn, "SELECT now()")[0][0]
    cpu: dict[str, tuple[float, float]] = {}
    with _cpu(stack, cpu):
        orders, seconds = _pgbench(stack, script, "-R", str(rate), "-T", str(int(WINDOW_SECONDS)))
    drain = _wait_orders(stack, since, orders, DRAIN_LIMIT_SECONDS * 6)  # longer, to measure the rest
    window = Window(rate, orders / seconds, orders,
                    drain if drain is not None and drain <= DRAIN_LIMIT_SECONDS else None, cpu=cpu)
    percentiles, top = _query(stack.warehouse_dsn, f"""
        SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms)
        FROM (SELECT extract(epoch FROM loaded_at - source_commit_ts) * 1000 AS ms
              {_WINDOW_ORDERS}) f""", {"since": since})[0]
    if percentiles is not None:
        window.p50, window.p95, window.p99 = (float(p) for p in percentiles)
        window.max_ms = float(top)
    window.stages = _waterfall(stack, since)
    return window


def _sustained(window: Window) -> bool:
    return (window.achieved >= 0.95 * window.target and window.drain_s is not None
            and window.p99 <= settings()["alarms"]["end_to_end_latency_p99_ms"])


def _workload(stack: Stack, script: Path, name: str, rate: float, windows: int) -> Workload:
    workload = Workload(name, rate)
    for number in range(windows):
        window = _window(stack, script, rate)
        workload.windows.append(window)
        print(f"   {name} window {number + 1}: {window}", flush=True)
    return workload


def _burst(stack: Stack, script: Path) -> Burst:
    """Capture paused while BURST transactions commit; then how fast the pipeline drains them,
    and how fast pg_recvlogical reads the same WAL."""
    assert stack.supervisor is not None
    server = stack.servers[0]
    publication = settings()["capture"]["publication"]
    _query(stack.source_dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
           (REFERENCE_SLOT,))
    capture = stack.supervisor.pids()["capture"]
    burst = Burst()
    try:
        since = _query(stack.source_dsn, "SELECT now()")[0][0]
        os.kill(capture, signal.SIGSTOP)
        try:
            burst.transactions, burst.commit_s = _pgbench(
                stack, script, "-t", str(BURST // CLIENTS))
            end = _query(stack.source_dsn, "SELECT pg_current_wal_lsn()::text")[0][0]
        finally:
            os.kill(capture, signal.SIGCONT)
        with _cpu(stack, burst.cpu):
            drain = _wait_orders(stack, since, burst.transactions, LOAD_TIMEOUT_SECONDS)
        burst.drain_s = math.nan if drain is None else drain
        began = time.monotonic()
        subprocess.run(
            [str(server.bindir / "pg_recvlogical"), "-d", stack.source_dsn, "--slot", REFERENCE_SLOT,
             "--start", "-o", "proto_version=1", "-o", f"publication_names={publication}",
             "-E", end, "-f", "/dev/null"],
            check=True, env={**os.environ, "PGPASSWORD": server.password}, timeout=600)
        burst.reference_s = time.monotonic() - began
    finally:
        _query(stack.source_dsn, "SELECT pg_drop_replication_slot(%s)", (REFERENCE_SLOT,))
    print(f"   burst: {burst}", flush=True)
    return burst


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
    settle(stack)
    return time.monotonic() - begin


def settle(stack: Stack) -> float:
    """VACUUM ANALYZE and CHECKPOINT both databases after a bulk write (the initial snapshot, the
    fact rows put in by SQL), in seconds: the windows after it would otherwise measure autovacuum
    and the checkpoint working through the rows just written, not the pipeline."""
    begin = time.monotonic()
    for dsn in (stack.source_dsn, stack.warehouse_dsn):
        conn = psycopg2.connect(dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM ANALYZE")
                cur.execute("CHECKPOINT")
        finally:
            conn.close()
    return time.monotonic() - begin


@dataclass
class Results:
    seeded: str = ""
    seed_rows: int = 0
    snapshot_s: float = 0.0
    fill_s: float = 0.0
    steady: list[Workload] = field(default_factory=list)
    search: list[Window] = field(default_factory=list)
    burst: Burst | None = None
    unsized: Workload | None = None  # 200/s just before the fill: the sized row's reference
    sized: Workload | None = None
    candidate: list[Workload] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


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


def measure(root: Path) -> Results:
    results = Results()
    with _stack(root / "candidate", CANDIDATE) as stack:
        _wait_snapshot(stack)
        settle(stack)
        script = _insert_script(stack, root)
        for rate in STEADY_RATES:
            results.load.append(os.getloadavg()[0])
            results.candidate.append(_workload(stack, script, f"{rate:,}/s, candidate", rate,
                                               REPEATS))
    with _stack(root / "after") as stack:
        results.seeded, results.seed_rows = stack.seeded_with, sum(stack.counts.values())
        results.snapshot_s = _wait_snapshot(stack)
        settle(stack)
        script = _insert_script(stack, root)
        for rate in STEADY_RATES:
            results.load.append(os.getloadavg()[0])
            results.steady.append(_workload(stack, script, f"{rate:,}/s", rate, REPEATS))
        results.load.append(os.getloadavg()[0])
        results.burst = _burst(stack, script)
        for rate in SEARCH_RATES:
            results.load.append(os.getloadavg()[0])
            window = _window(stack, script, rate)
            print(f"   search: {window}", flush=True)
            results.search.append(window)
            if not _sustained(window):
                break
        if FACT_ROWS:
            # The sized row's reference is measured here, on the stack as the fill finds it: the
            # emulator then holds what every window before wrote, as it does for the sized row.
            results.load.append(os.getloadavg()[0])
            results.unsized = _workload(stack, script, "200/s, just before the fill", 200, REPEATS)
            results.fill_s = _fill_facts(stack, FACT_ROWS)
            results.load.append(os.getloadavg()[0])
            results.sized = _workload(stack, script, f"200/s, {FACT_ROWS:,} fact rows loaded", 200,
                                      REPEATS)
    return results


# --- the section ----------------------------------------------------------------------------------

def _share(times: tuple[float, float]) -> str:
    return f"{times[0]:.2f} / {times[1]:.2f}"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _drain(windows: list[Window]) -> str:
    drains = [w.drain_s for w in windows]
    if any(d is None for d in drains):
        return "not drained"
    return f"{statistics.median(d for d in drains if d is not None):.1f}"


def _latency_row(w: Workload, goal: str) -> str:
    return (f"| {w.name} | {w.median('achieved'):,.0f} | {_ms(w.median('p50'))} | "
            f"{_ms(w.median('p95'))} | {_ms(w.median('p99'))} | {_ms(w.median('max_ms'))} | "
            f"{_drain(w.windows)} | {len(w.windows)} | {goal} |")


def _sizes(results: Results) -> list[Workload]:
    """The steady workloads, then the sized row and its reference."""
    return [*results.steady, *(w for w in (results.unsized, results.sized) if w is not None)]


def _cpu_columns(results: Results) -> list[str]:
    seen: dict[str, None] = {}
    for w in _sizes(results):
        for window in w.windows:
            seen.update(dict.fromkeys(window.cpu))
    for window in results.search:
        seen.update(dict.fromkeys(window.cpu))
    return list(seen)


def render(r: Results) -> str:
    mapping = settings()["stream_processor_mapping"]
    loader = settings()["loader_mapping"]
    alarm = settings()["alarms"]["end_to_end_latency_p99_ms"]
    lines = [
        f"## End-to-end pipeline (as of {dt.date.today().isoformat()})",
        "",
        f"The local stack (`totes_ops.stack.up`, each component its own OS process) seeded with the "
        f"{'real totesys data' if r.seeded == 'totesys' else 'synthetic data'} ({r.seed_rows:,} "
        f"rows). Traffic from a second process: `pgbench --rate`, {CLIENTS} connections, single-row "
        f"INSERT transactions of sales orders, in windows of {WINDOW_SECONDS:.0f} s; after each "
        "window the pipeline drains before the next. Latency = `loaded_at - source_commit_ts` of "
        "the window's fact_sales_order rows, in ms; each row: medians over its windows. Drain = "
        "seconds from the end of the traffic until the window's last order is a fact row. Load "
        f"average (1 min) during the run: {', '.join(f'{x:.1f}' for x in r.load)} (the 2 cores are "
        "shared with other work: expect noise).",
        "",
        f"Settings: capture max_batch_delay_ms {settings()['capture']['max_batch_delay_ms']}; "
        f"stream processor batch size {mapping['batch_size']}, batching window "
        f"{mapping['maximum_batching_window_seconds']} s; loader batch size {loader['batch_size']}, "
        f"{loader['maximum_concurrency']} workers.",
        "",
        f"Initial snapshot, source -> warehouse: {r.snapshot_s:.1f} s after `up` returned; then "
        "`VACUUM ANALYZE` and `CHECKPOINT` of both databases before the first window.",
        "",
        "| workload | changes/s made | p50 | p95 | p99 | max | drain s | windows | goal (p99) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w in r.steady:
        goal = GOAL_P99_MS[int(w.rate)]
        met = "met" if w.median("p99") <= goal else "not met"
        lines.append(_latency_row(w, f"<= {goal:,} ms: {met}"))
    if r.sized is not None and r.unsized is not None:
        ratio = r.sized.median("p99") / r.unsized.median("p99")
        lines.append(_latency_row(r.unsized, "reference of the next row"))
        lines.append(_latency_row(r.sized, f"within 20 % of the row before: {ratio:.2f}x, "
                                           f"{'met' if 0.8 <= ratio <= 1.2 else 'not met'}"))
    if r.candidate:
        lines += [
            "",
            "A candidate setting against settings.json, the same run (the candidate stack, first, "
            f"ran with `{json.dumps(CANDIDATE)}` through `$TOTES_CDC_SETTINGS_OVERRIDES`):",
            "",
            "| workload | changes/s made | p50 | p95 | p99 | max | drain s | windows | p99 ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for candidate, current in zip(r.candidate, r.steady, strict=False):
            ratio = candidate.median("p99") / current.median("p99")
            lines += [_latency_row(candidate, f"{ratio:.2f} of settings"), _latency_row(current, "")]
    lines += [
        "",
        "Where the latency goes: the waterfall of the files loaded in each workload's windows "
        "(`pipeline_latency`, as `totes-cdc status` shows it; per stage p50 / p99 in ms, medians "
        "over the windows):",
        "",
        "| stage | " + " | ".join(w.name for w in r.steady) + " |",
        "|---|" + "---:|" * len(r.steady),
    ]
    for stage in STAGES:
        lines.append(f"| {stage.label} | " + " | ".join(
            f"{_ms(w.median_stage(stage.name, 0))} / {_ms(w.median_stage(stage.name, 1))}"
            for w in r.steady) + " |")
    if r.burst is not None:
        b = r.burst
        ratio = b.rate / b.reference_rate
        lines += [
            "",
            f"Burst: capture paused (SIGSTOP) while pgbench committed {b.transactions:,} "
            f"single-row transactions ({b.commit_s:.1f} s), then resumed. Drained end to end "
            f"(resumed -> last fact row) in {b.drain_s:.1f} s: {b.rate:,.0f} transactions/s. "
            f"Reference, same run: `pg_recvlogical` reading the same WAL from a slot made just "
            f"before the burst, {b.reference_s:.2f} s: {b.reference_rate:,.0f} transactions/s. "
            f"Ratio {ratio:.2f} (goal >= 0.25: {'met' if ratio >= 0.25 else 'not met'}). During "
            "the drain, on CPU / waiting for a CPU (1.0 = one core's worth): "
            + ", ".join(f"{name} {_share(share)}" for name, share in b.cpu.items() if name != REST)
            + f"; the {REST} busy / stolen {_share(b.cpu[REST])}.",
        ]
    lines += [
        "",
        "Highest sustained rate: one window per rate, rising until pgbench cannot make 95 % of "
        f"the rate, the window does not drain within {DRAIN_LIMIT_SECONDS:.0f} s or its p99 "
        f"passes the alarm threshold ({alarm:,} ms).",
        "",
        "| target changes/s | made | p50 | p95 | p99 | drain s | sustained |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in r.search:
        lines.append(f"| {s.target:,.0f} | {s.achieved:,.0f} | {_ms(s.p50)} | {_ms(s.p95)} | "
                     f"{_ms(s.p99)} | {'-' if s.drain_s is None else f'{s.drain_s:.1f}'} | "
                     f"{'yes' if _sustained(s) else 'no'} |")
    sustained = [s.target for s in r.search if _sustained(s)] + [
        w.rate for w in r.steady if all(_sustained(x) for x in w.windows)]
    best = max(sustained, default=0)
    lines += ["", (f"Highest sustained: {best:,.0f} changes/s" if best else
                   "No rate measured was sustained") + f" (goal >= 10,000: "
              f"{'met' if best >= 10_000 else 'not met'}).", ""]
    processes = _cpu_columns(r)
    lines += [
        "Where the CPU goes during the traffic: per process, time on a CPU (`/proc/<pid>/stat`) / "
        "time its live threads were runnable but waiting for one (`/proc/<pid>/task/*/schedstat`;"
        " the emulator's request threads end with their request, so its wait is undercounted), "
        "as a share of the window (1.0 = one core's worth; the machine has 2; PostgreSQL with "
        "its backends, those that ended in the window included; medians over a workload's "
        "windows). Waiting far above running means the "
        f"process is starved of CPU. The last column, {REST}: the CPU time the machine was busy "
        "(`/proc/stat`) outside the processes measured (the traffic generator, this benchmark, "
        "kernel threads) / the time the hypervisor stole from its CPUs:",
        "",
        "| workload | " + " | ".join(processes) + " |",
        "|---|" + "---:|" * len(processes),
    ]
    for w in _sizes(r):
        lines.append(f"| {w.name} | " + " | ".join(_share(w.median_cpu(p)) for p in processes)
                     + " |")
    for window in r.search:
        lines.append(f"| {window.target:,.0f}/s (search) | " + " | ".join(
            _share(window.cpu.get(p, (0.0, 0.0))) for p in processes) + " |")
    if r.sized is not None:
        lines += ["", f"Size: {FACT_ROWS:,} fact rows put into fact_sales_order with SQL "
                      f"({r.fill_s:.0f} s, with `VACUUM ANALYZE` and `CHECKPOINT` of both databases) "
                      "between its row and the row before it, which ran on the same stack after every "
                      "other window (the emulator keeps every record and object written in the run: "
                      "the first 200/s row ran on an emptier one)."]
    lines += ["", "What bounds the goals not met, with the components' profiles: "
                  "[`docs/benchmarks.md`](docs/benchmarks.md#what-the-figures-say-and-what-was-tuned)."]
    return "\n".join(lines) + "\n"


def run() -> str:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as root:
        return render(measure(Path(root)))

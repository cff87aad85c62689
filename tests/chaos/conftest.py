"""The fault-injection suite's stack: the local pipeline in this process's hands.

One stack serves every scenario of a module (starting it and loading the initial snapshot is the
slow part). It is the in-process :class:`totes_ops.stack.up.Stack`, so the tests hold the
PostgreSQL servers and the supervisor; the components reach the AWS emulator through a
:class:`~tests.chaos.proxy.FaultProxy`, so AWS faults can be injected between them. It runs in the
production shape: the loader runner's concurrent workers (``loader_mapping.maximum_concurrency``),
traffic with cancellations and long transactions, and a source whose ``wal_sender_timeout`` is
short, so a stalled stream sees the server's keepalives. Each scenario records what it did; the
session writes ``tests/chaos/.results.json`` (rendered into RELIABILITY.md by
``python -m tests.chaos.report``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import random
import signal
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.chaos.proxy import FaultProxy
from tests.chaos.report import RESULTS_PATH
from tests.chaos.traffic import Traffic
from tests.conftest import SEED_DIR
from tests.e2e.conftest import RunningStack
from tests.e2e.test_pipeline import fact_counts
from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_ops.stack import seed as seeding
from totes_ops.stack.ports import free_port
from totes_ops.stack.postgres import LocalPostgres
from totes_ops.stack.up import Stack, StackOptions, new_stack, start
from warehouse_loader.reconcile import RawZone, reconcile, render

log = logging.getLogger(__name__)

# The random moments and choices of a run come from this seed (logged and recorded).
SEED = int(os.environ.get("TOTES_CDC_CHAOS_SEED", "8"))
RATE = float(os.environ.get("TOTES_CDC_CHAOS_RATE", "20"))  # simulated changes per second
COMPONENTS = ("capture", "process", "load")
RECONCILE_TIMEOUT = 120.0  # catch-up after a fault takes 5-30 s here; longer means something is lost
RECONCILE_POLL_SECONDS = 3.0
# The source server's wal_sender_timeout: it asks a silent client for a reply after half of it,
# so a Kinesis stall of a few times this long sees several keepalives.
WAL_SENDER_TIMEOUT = "4s"
# A file whose loader was killed comes back after the queue's visibility timeout: 120 s in
# settings.json, shortened here so each scenario catches up within the suite's time bound.
SETTINGS_OVERRIDES = {"loader_mapping": {"visibility_timeout_seconds": 20}}
OUTCOME = pytest.StashKey[tuple[str, str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: fault injection on the running pipeline")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[OUTCOME] = (report.outcome, report.longreprtext[-2000:] if report.failed else "")
    return report


class ChaosStack:
    """The running pipeline, its servers, the supervisor's loop, the proxy and a seeded random."""

    def __init__(self, stack: Stack, proxy: FaultProxy, rng: random.Random) -> None:
        self.stack, self.proxy, self.rng = stack, proxy, rng
        self.view = RunningStack(process=None, state_dir=stack.options.state_dir,  # type: ignore[arg-type]
                                 info=stack.description())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        """What ``totes-cdc up`` does while it runs: restart components that died."""
        while not self._stop.wait(0.5):
            with self._lock:
                if self.stack.supervisor is not None:
                    self.stack.supervisor.check()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.stack.close()

    def server(self, name: str) -> LocalPostgres:
        return next(s for s in self.stack.servers if s.data_dir.name == name)

    def kill(self, component: str, timeout: float = 90.0) -> int:
        """SIGKILL ``component`` (waiting for the supervisor to have it running); its pid."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                assert self.stack.supervisor is not None
                pid = self.stack.supervisor.pids().get(component)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    log.info("chaos: kill -9 %s (pid %d)", component, pid)
                    return pid
            if time.monotonic() > deadline:
                raise AssertionError(f"{component} was not running within {timeout:.0f} s")
            time.sleep(0.2)

    def restarts(self) -> dict[str, int]:
        with self._lock:
            assert self.stack.supervisor is not None
            return {c.name: c.restarts for c in self.stack.supervisor.components}

    def traffic(self) -> Traffic:
        return Traffic(self.stack.source_dsn, RATE, seed=self.rng.randrange(1 << 16))

    def fact_counts(self) -> dict[str, int]:
        return fact_counts(self.stack.warehouse_dsn)

    def wait_reconciled(self, timeout: float = RECONCILE_TIMEOUT) -> dict[str, Any]:
        return wait_reconciled(self.stack, self.view, timeout)


def wait_reconciled(stack: Stack, view: RunningStack, timeout: float) -> dict[str, Any]:
    """Reconcile, with history, until it passes or ``timeout``; the last report (as ``--json``
    gives it) with ``exit_code``. In process, with one RawZone, so each raw object is read once."""
    raw = RawZone(view.client("s3"), settings()["buckets"]["raw"], settings()["prefixes"]["raw"])
    deadline = time.monotonic() + timeout
    while True:
        result: dict[str, Any]
        try:
            report = reconcile(stack.source_dsn, stack.warehouse_dsn, raw)
            result = {**json.loads(render(report, as_json=True)), "exit_code": 0 if report.ok else 1}
        except Exception as exc:  # a server restarting: the report says so and polling goes on
            result = {"error": f"{type(exc).__name__}: {exc}", "exit_code": 2}
        if result["exit_code"] == 0 or time.monotonic() > deadline:
            return result
        time.sleep(RECONCILE_POLL_SECONDS)


def short_wal_sender_timeout(dsn: str) -> None:
    """Set the server's wal_sender_timeout to WAL_SENDER_TIMEOUT (walsenders take it on reload)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET wal_sender_timeout = %s", (WAL_SENDER_TIMEOUT,))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    log.info("chaos: source wal_sender_timeout = %s", WAL_SENDER_TIMEOUT)


def run_facts() -> dict[str, Any]:
    """What every run records about the shape it ran in."""
    return {"loader_workers": settings()["loader_mapping"]["maximum_concurrency"],
            "wal_sender_timeout": WAL_SENDER_TIMEOUT}


class Scenario:
    """One scenario's record: faults, changes on both sides, the reconciliation, the outcome."""

    def __init__(self, name: str, chaos: ChaosStack) -> None:
        self.chaos = chaos
        self.started = time.monotonic()
        self.record: dict[str, Any] = {"name": name, "faults": [], "source_changes": {},
                                       "warehouse_changes": {}, "notes": []}
        self._facts_before = chaos.fact_counts()
        self._restarts_before = chaos.restarts()

    def fault(self, text: str) -> None:
        log.info("chaos: %s", text)
        self.record["faults"].append(f"+{time.monotonic() - self.started:.1f} s: {text}")

    def note(self, text: str) -> None:
        self.record["notes"].append(text)

    def source_change(self, what: str, count: int) -> None:
        self.record["source_changes"][what] = self.record["source_changes"].get(what, 0) + count

    def check(self, traffic: Traffic) -> dict[str, Any]:
        """Record the traffic's totals, wait for reconcile, record what changed in the warehouse."""
        totals = traffic.totals
        self.source_change("simulated changes", totals.changes)
        self.source_change("simulated transactions", totals.transactions)
        if totals.interruptions:
            self.note(f"traffic interrupted {totals.interruptions} time(s) and resumed")
        faults_over = time.monotonic()
        report = self.chaos.wait_reconciled()
        self.record["catch_up_seconds"] = round(time.monotonic() - faults_over, 1)
        return self.judge(report)

    def judge(self, report: dict[str, Any]) -> dict[str, Any]:
        """Record what changed in the warehouse and the reconciliation; assert it passed."""
        after = self.chaos.fact_counts()
        self.record["warehouse_changes"] = {
            f"{table} rows appended": after[table] - before
            for table, before in self._facts_before.items()}
        restarts = self.chaos.restarts()
        self.record["restarts"] = {name: n - self._restarts_before[name]
                                   for name, n in restarts.items() if n != self._restarts_before[name]}
        tables = report.get("tables", [])
        self.record["reconcile"] = {
            "exit_code": report["exit_code"], "ok": report.get("ok", False),
            "tables_compared": len(tables),
            "differences": sum(t["differences"] for t in tables),
            "failing": {t["table"]: {k: t[k] for k in ("missing", "extra", "different",
                                                       "sample_missing", "sample_extra",
                                                       "sample_different")}
                        for t in tables if t["differences"]},
            "compared": report.get("compared", {}),
            **({"error": report["error"][-1500:]} if "error" in report else {})}
        assert report["exit_code"] == 0 and report.get("ok"), json.dumps(report, indent=1)[:4000]
        return report


def _stack_options(state_dir: Path, emulator_port: int, proxy: FaultProxy) -> StackOptions:
    return StackOptions(state_dir=state_dir, seed="totesys" if seeding.real_data_available(SEED_DIR)
                        else "synthetic", seed_dir=SEED_DIR, emulator_port=emulator_port,
                        components=COMPONENTS, component_aws_endpoint=proxy.endpoint)


@pytest.fixture(scope="session")
def chaos_results() -> Iterator[dict[str, Any]]:
    """The run's record, written to RESULTS_PATH when the session ends."""
    results: dict[str, Any] = {
        "run": {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "seed": SEED,
                "rate_changes_per_s": RATE, "machine": f"{platform.node()}: {os.cpu_count()} cores, "
                f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
                "moto": version("moto"), **run_facts()},
        "scenarios": []}
    yield results
    RESULTS_PATH.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory,
          chaos_results: dict[str, Any]) -> Iterator[ChaosStack]:
    """The stack, up, with its initial snapshot reconciled."""
    log.info("chaos: seed %d", SEED)
    emulator_port = free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{emulator_port}", seed=SEED)
    proxy.start()
    stack = new_stack(_stack_options(tmp_path_factory.mktemp("chaos") / "state", emulator_port, proxy))
    chaos: ChaosStack | None = None
    patch = pytest.MonkeyPatch()
    try:
        # In this process (resources) and, inherited, in the components.
        patch.setenv(OVERRIDES_ENV, json.dumps(SETTINGS_OVERRIDES))
        settings.cache_clear()
        chaos_results["run"]["settings_overrides"] = SETTINGS_OVERRIDES
        began = time.monotonic()
        start(stack)
        short_wal_sender_timeout(stack.source_dsn)
        chaos = ChaosStack(stack, proxy, random.Random(SEED))
        report = chaos.wait_reconciled()
        assert report["exit_code"] == 0, json.dumps(report, indent=1)[:4000]
        chaos_results["run"].update({
            "seed_data": stack.seeded_with, "source_rows": sum(stack.counts.values()),
            "postgres": str(stack.servers[0].bindir),
            "start_and_snapshot_seconds": round(time.monotonic() - began, 1)})
        yield chaos
    finally:
        if chaos is not None:
            chaos.close()
        else:
            stack.close()
        proxy.stop()
        patch.undo()
        settings.cache_clear()


def new_scenario(request: pytest.FixtureRequest, chaos: ChaosStack) -> Scenario:
    """The scenario of the test ``request`` runs, titled by its docstring's first line."""
    scenario = Scenario(request.node.name.removeprefix("test_"), chaos)
    scenario.record["title"] = (request.node.function.__doc__ or "").strip().splitlines()[0]
    return scenario


def finish_scenario(request: pytest.FixtureRequest, scenario: Scenario,
                    chaos_results: dict[str, Any]) -> None:
    """Record the test's outcome (and, when it did not pass, the components' last log lines)."""
    outcome, failure = request.node.stash.get(OUTCOME, ("error", ""))
    scenario.record["outcome"] = outcome
    if failure:
        scenario.record["failure"] = failure
    scenario.record["seconds"] = round(time.monotonic() - scenario.started, 1)
    if outcome != "passed":
        scenario.record["log_tails"] = {c: scenario.chaos.view.log(c)[-3000:] for c in COMPONENTS}
    chaos_results["scenarios"].append(scenario.record)


@pytest.fixture
def scenario(request: pytest.FixtureRequest, chaos: ChaosStack,
             chaos_results: dict[str, Any]) -> Iterator[Scenario]:
    scenario = new_scenario(request, chaos)
    try:
        yield scenario
    finally:
        finish_scenario(request, scenario, chaos_results)

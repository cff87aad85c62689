"""The fault-injection suite's stack: the local pipeline in this process's hands.

One stack serves every scenario of a module (starting it and loading the initial snapshot is the
slow part). It is the in-process :class:`totes_cdc.stack.up.Stack`, so the tests hold the
PostgreSQL servers and the supervisor; the components reach the AWS emulator through a
:class:`~tests.chaos.proxy.FaultProxy`, so AWS faults can be injected between them. Each scenario
records what it did; the module writes ``tests/chaos/.results.json`` (rendered into
RELIABILITY.md by ``python -m tests.chaos.report``).
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

import pytest

from tests.chaos.proxy import FaultProxy
from tests.chaos.report import RESULTS_PATH
from tests.chaos.traffic import Traffic
from tests.conftest import SEED_DIR
from tests.e2e.conftest import RunningStack
from tests.e2e.test_pipeline import fact_counts
from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_cdc.stack import seed as seeding
from totes_cdc.stack.postgres import LocalPostgres, free_port
from totes_cdc.stack.up import Stack, StackOptions, new_stack, start

log = logging.getLogger(__name__)

# The random moments and choices of a run come from this seed (logged and recorded).
SEED = int(os.environ.get("TOTES_CDC_CHAOS_SEED", "8"))
RATE = float(os.environ.get("TOTES_CDC_CHAOS_RATE", "20"))  # simulated changes per second
COMPONENTS = ("capture", "process", "load")
RECONCILE_TIMEOUT = 120.0  # catch-up after a fault takes 5-30 s here; longer means something is lost
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
        report = self.chaos.view.wait_reconciled(timeout=RECONCILE_TIMEOUT)
        self.record["catch_up_seconds"] = round(time.monotonic() - faults_over, 1)
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
                                                       "duplicate_positions")}
                        for t in tables if t["differences"]},
            **({"error": report["error"][-1500:]} if "error" in report else {})}
        assert report["exit_code"] == 0 and report.get("ok"), json.dumps(report, indent=1)[:4000]
        return report


def _stack_options(state_dir: Path, emulator_port: int, proxy: FaultProxy) -> StackOptions:
    return StackOptions(state_dir=state_dir, seed="totesys" if seeding.real_data_available(SEED_DIR)
                        else "synthetic", seed_dir=SEED_DIR, emulator_port=emulator_port,
                        components=COMPONENTS, component_aws_endpoint=proxy.endpoint)


@pytest.fixture(scope="module")
def chaos_results() -> Iterator[dict[str, Any]]:
    """The run's record, written to RESULTS_PATH when the module ends."""
    results: dict[str, Any] = {
        "run": {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "seed": SEED,
                "rate_changes_per_s": RATE, "machine": f"{platform.node()}: {os.cpu_count()} cores, "
                f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
                "moto": version("moto")},
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
        chaos = ChaosStack(stack, proxy, random.Random(SEED))
        report = chaos.view.wait_reconciled(timeout=RECONCILE_TIMEOUT)
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


@pytest.fixture
def scenario(request: pytest.FixtureRequest, chaos: ChaosStack,
             chaos_results: dict[str, Any]) -> Iterator[Scenario]:
    scenario = Scenario(request.node.name.removeprefix("test_"), chaos)
    scenario.record["title"] = (request.node.function.__doc__ or "").strip().splitlines()[0]
    try:
        yield scenario
    finally:
        outcome, failure = request.node.stash.get(OUTCOME, ("error", ""))
        scenario.record["outcome"] = outcome
        if failure:
            scenario.record["failure"] = failure
        scenario.record["seconds"] = round(time.monotonic() - scenario.started, 1)
        logs = {c: chaos.view.log(c)[-3000:] for c in COMPONENTS} if outcome != "passed" else {}
        if logs:
            scenario.record["log_tails"] = logs
        chaos_results["scenarios"].append(scenario.record)

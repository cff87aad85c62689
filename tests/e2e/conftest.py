"""The whole local stack, started the way a user starts it: ``totes-cdc up`` in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_ops.stack.emulator import client_env, emulator_client


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    state_dir: Path
    info: dict[str, Any]
    output: str = ""  # what `up` printed until it was ready

    def refresh(self) -> dict[str, Any]:
        self.info = json.loads((self.state_dir / "stack.json").read_text())
        return self.info

    @property
    def source_dsn(self) -> str:
        return self.info["source_dsn"]

    @property
    def warehouse_dsn(self) -> str:
        return self.info["warehouse_dsn"]

    def client(self, service: str) -> Any:
        return emulator_client(self.info["aws_endpoint_url"], service)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **client_env(self.info["aws_endpoint_url"]),
               "TOTES_CDC_SOURCE_DSN": self.source_dsn,
               "TOTES_CDC_WAREHOUSE_DSN": self.warehouse_dsn,
               "TOTES_CDC_STATE_DIR": self.info["run_dir"]}
        return subprocess.run([sys.executable, "-m", "totes_ops", *args], capture_output=True,
                              text=True, env=env, timeout=timeout)

    def wait_reconciled(self, timeout: float = 240) -> dict[str, Any]:
        """Poll `reconcile --json` until it passes; the last report either way."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.cli("reconcile", "--json")
            if result.returncode == 0 or time.monotonic() > deadline:
                report: dict[str, Any] = (json.loads(result.stdout) if result.stdout.strip()
                                          else {"error": result.stderr})
                report["exit_code"] = result.returncode
                return report
            time.sleep(3)

    def execute(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements in one source transaction."""
        conn = psycopg2.connect(self.source_dsn)
        try:
            with conn, conn.cursor() as cur:
                for statement, params in statements:
                    cur.execute(statement, params)
        finally:
            conn.close()

    def log(self, component: str) -> str:
        path = Path(self.info["logs"]) / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""


# A processed-file message left in flight (its loader gone, or its delete lost) comes back after
# the queue's visibility timeout: 720 s in settings.json, shortened here so that a redelivery lands
# within the tests' waits.
SETTINGS_OVERRIDES = {"loader_mapping": {"visibility_timeout_seconds": 30}}


def start_stack(state_dir: Path, *extra: str, timeout: float = 180) -> RunningStack:
    env = {**os.environ, OVERRIDES_ENV: json.dumps(SETTINGS_OVERRIDES)}
    process = subprocess.Popen([sys.executable, "-m", "totes_ops", "up", "--state-dir", str(state_dir),
                                *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    deadline = time.monotonic() + timeout
    lines = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            stack = RunningStack(process, state_dir, {}, "".join(lines))
            stack.refresh()
            return stack
    process.kill()
    raise AssertionError("stack did not come up:\n" + "".join(lines))


def stop_stack(stack: RunningStack) -> str:
    stack.process.send_signal(signal.SIGINT)
    out, _ = stack.process.communicate(timeout=60)
    return out


@pytest.fixture
def real_stack(tmp_path: Path) -> Iterator[RunningStack]:
    """`totes-cdc up` on fresh servers with the real totesys rows."""
    stack = start_stack(tmp_path / "state", "--seed", "totesys")
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            stop_stack(stack)


def processed_keys(stack: RunningStack) -> list[str]:
    s3 = stack.client("s3")
    bucket = settings()["buckets"]["processed"]
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=settings()["prefixes"]["processed"]):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys

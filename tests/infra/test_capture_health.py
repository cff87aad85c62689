"""The capture container's health check (infra/docker/capture_health.py): healthy while this task's
capture process makes progress, in every phase; run as the container runs it (its own process)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest

from capture.service import CaptureService
from tests.conftest import query
from tests.infra.hcl import INFRA
from tests.integration.capture.conftest import capture_factory, seed_designs, wait_for
from totes_cdc.lakefiles import ObjectStore
from totes_cdc.settings import settings

__all__ = ["capture_factory"]  # the capture integration tests' fixture, used here too

CHECK = INFRA / "docker" / "capture_health.py"
MAX_AGE = 2.0  # seconds: settings capture.health_max_age_seconds, shortened


def check(state_dir: Path, max_age: float = MAX_AGE) -> tuple[int, str]:
    """Run the health check as ECS does; (exit code, stderr)."""
    env = {**os.environ, "TOTES_CDC_STATE_DIR": str(state_dir),
           "TOTES_CDC_SETTINGS_OVERRIDES": json.dumps({"capture": {"health_max_age_seconds": max_age}})}
    done = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stderr


def write_status(state_dir: Path, pid: int, age_s: float, phase: str = "streaming") -> None:
    path = state_dir / "status" / "capture.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    updated = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    path.write_text(json.dumps({"phase": phase, "updated_at": updated.isoformat(), "pid": pid}))


# --- the check on its own -------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["starting", "snapshot", "streaming", "reconnecting"])
def test_fresh_status_of_a_live_process_is_healthy_in_any_phase(tmp_path: Path, phase: str) -> None:
    write_status(tmp_path, os.getpid(), age_s=0.5, phase=phase)
    assert check(tmp_path) == (0, "")


def test_stale_status_is_unhealthy(tmp_path: Path) -> None:
    write_status(tmp_path, os.getpid(), age_s=10, phase="snapshot")
    code, err = check(tmp_path)
    assert code == 1
    assert err.startswith("capture unhealthy: no progress for 10s (more than 2s) in phase snapshot")


def test_status_left_by_a_process_that_is_gone_is_unhealthy(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_status(tmp_path, gone.pid, age_s=0)
    code, err = check(tmp_path)
    assert code == 1 and f"(pid {gone.pid}) is not running" in err


def test_no_or_unreadable_status_is_unhealthy(tmp_path: Path) -> None:
    code, err = check(tmp_path)
    assert code == 1 and "capture has written no status" in err
    (tmp_path / "status" / "capture.json").parent.mkdir(parents=True)
    (tmp_path / "status" / "capture.json").write_text("{")
    code, err = check(tmp_path)
    assert code == 1 and "unreadable status" in err


def test_max_age_outlasts_the_longest_quiet_stretch_of_a_healthy_capture() -> None:
    """Capture rewrites the status every metrics interval and before each reconnection attempt."""
    from capture.config import CaptureConfig

    config = CaptureConfig.from_settings("", Path())
    quiet = max(config.metrics_seconds, config.reconnect_max_seconds)
    assert settings()["capture"]["health_max_age_seconds"] >= 3 * quiet


# --- the check against a running capture, phase by phase ------------------------------------------

class SlowLake(ObjectStore):
    """The real lake, slowed down so the snapshot takes longer than the grace period."""

    def __init__(self) -> None:
        super().__init__(boto3.client("s3"))

    def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        time.sleep(0.75)  # a range is at least a block of rows: a few files per table
        return super().put_new(bucket, key, body, content_type)


class Outage:
    """The source refusing every connection to the capture's database, existing ones dropped (as a
    restart or failover would do), until ``end``."""

    def __init__(self, dsn: str) -> None:
        params = psycopg2.extensions.parse_dsn(dsn)
        self.database = params["dbname"]
        self.admin = str(psycopg2.extensions.make_dsn(**{**params, "dbname": "postgres"}))

    def _run(self, statement: str) -> None:
        conn = psycopg2.connect(self.admin)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement.format(db=psycopg2.extensions.quote_ident(self.database, cur)))
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid() AND %s",
                            (self.database, "false" in statement))
        finally:
            conn.close()

    def start(self) -> None:
        self._run("ALTER DATABASE {db} ALLOW_CONNECTIONS false")

    def end(self) -> None:
        self._run("ALTER DATABASE {db} ALLOW_CONNECTIONS true")


def phase(state_dir: Path) -> str | None:
    path = state_dir / "status" / "capture.json"
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["phase"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def slot_active(dsn: str, slot: str) -> bool:
    rows = query(dsn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return bool(rows and rows[0][0])


def healthy_throughout(state_dir: Path, seconds: float, also: Callable[[], None] = lambda: None) -> int:
    """Run the check again and again for ``seconds``; every run must pass. How many ran."""
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        also()
        assert check(state_dir) == (0, ""), f"unhealthy in phase {phase(state_dir)}"
        runs += 1
    return runs


@pytest.mark.integration
def test_healthy_in_every_phase_of_a_capture_and_unhealthy_once_it_stops(
        totesys_dsn: str, capture_factory: Any, tmp_path: Path) -> None:
    seed_designs(totesys_dsn, 1000)
    dsn = totesys_dsn
    grace = 2 * MAX_AGE  # the container's startPeriod, shortened as MAX_AGE is

    # Snapshot, on the slot it has created but not started: the slot has no reader meanwhile.
    first: CaptureService = capture_factory(dsn, objects=SlowLake(), snapshot_chunk_rows=20,
                                            snapshot_workers=1)
    slot = first.config.slot
    thread = capture_factory.start(first)
    # Creating the slot holds it (active) until the server finds its consistent point, which waits
    # for the transactions then running on the whole server; the read starts after.
    wait_for(lambda: phase(tmp_path) == "snapshot" and query(
        totesys_dsn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (slot,)),
        what="the snapshot's read")
    started = time.monotonic()

    def in_snapshot_without_a_reader() -> None:
        assert phase(tmp_path) == "snapshot" and not slot_active(totesys_dsn, slot)

    healthy_throughout(tmp_path, grace + 2 * MAX_AGE, in_snapshot_without_a_reader)
    assert time.monotonic() - started > grace + MAX_AGE

    # Stopped midway: the check fails once the status is older than the limit, even while another
    # connection holds the slot.
    first.stop.set()
    thread.join(timeout=30)
    reader = psycopg2.connect(totesys_dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        reader.cursor().start_replication(slot_name=slot, decode=False, options={
            "proto_version": "1", "publication_names": settings()["capture"]["publication"]})
        wait_for(lambda: slot_active(totesys_dsn, slot), what="the other reader")
        time.sleep(MAX_AGE + 0.5)
        code, err = check(tmp_path)
        assert code == 1 and "no progress for" in err
    finally:
        reader.close()

    # The resumed snapshot reads through a temporary slot; the capture slot has no reader.
    second: CaptureService = capture_factory(dsn, slot=slot, objects=SlowLake(), snapshot_chunk_rows=20,
                                             snapshot_workers=1)
    capture_factory.start(second)

    def temporary_slots() -> list[str]:
        rows = query(totesys_dsn, "SELECT slot_name FROM pg_replication_slots WHERE temporary")
        return [name for (name,) in rows if name.startswith(f"{slot}_resume_")]

    wait_for(lambda: bool(temporary_slots()), what="the resumed snapshot's temporary slot")
    wait_for(lambda: phase(tmp_path) == "snapshot", what="the resumed snapshot")
    healthy_throughout(tmp_path, 2 * MAX_AGE, in_snapshot_without_a_reader)

    # Streaming.
    wait_for(lambda: phase(tmp_path) == "streaming", timeout=120, what="streaming")
    healthy_throughout(tmp_path, 2 * MAX_AGE)
    assert slot_active(totesys_dsn, slot)

    # Reconnecting while the source cannot be reached, for longer than the limit.
    outage = Outage(totesys_dsn)
    outage.start()
    try:
        wait_for(lambda: phase(tmp_path) == "reconnecting", what="reconnecting")
        healthy_throughout(tmp_path, 2 * MAX_AGE)
        assert phase(tmp_path) == "reconnecting"
    finally:
        outage.end()
    wait_for(lambda: phase(tmp_path) == "streaming", timeout=60, what="streaming again")
    assert check(tmp_path) == (0, "")

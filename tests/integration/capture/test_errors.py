"""Which errors capture retries: a lost connection, always; a terminal error, never, even after it
has streamed (the source changed under it in a way only an operator can fix)."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import psycopg2.extensions
import pytest

from capture.service import CaptureService
from tests.conftest import query
from tests.integration.capture.conftest import (
    assert_versions_exact,
    dedupe,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from totes_cdc.errors import ConfigError
from totes_cdc.lakefiles import ObjectStore

pytestmark = pytest.mark.integration


class Running:
    """``service.run`` in a thread, keeping what it raised."""

    def __init__(self, service: CaptureService) -> None:
        self.service = service
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def ended(self) -> bool:
        return not self.thread.is_alive()


def drop_connections(dsn: str) -> None:
    """End every other session on the test database, capture's walsender included."""
    execute(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def test_a_lost_connection_is_retried_and_nothing_is_lost(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 5)
    service = capture_factory(totesys_dsn)
    running = Running(service)
    try:
        wait_for(lambda: service._phase == "streaming", what="streaming")
        execute(totesys_dsn, "UPDATE design SET design_name = '1'")
        drop_connections(totesys_dsn)
        execute(totesys_dsn, "UPDATE design SET design_name = '2'")
        wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
        assert not running.ended()
    finally:
        service.stop.set()
        running.thread.join(timeout=30)
    assert running.error is None
    events = dedupe(read_stream())
    assert_versions_exact(events, totesys_dsn)
    assert sum(e.op == "u" for e in events) == 10


def test_a_password_changed_under_the_stream_ends_capture_instead_of_reconnecting_for_ever(
        totesys_dsn, capture_factory):
    """A rotated password: the next connection is refused for good, so capture ends (exit 2, and
    in AWS a new task reads the secret again) instead of retrying the old password."""
    role, password = f"capture_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    execute(totesys_dsn, f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    dsn = psycopg2.extensions.make_dsn(totesys_dsn, user=role, password=password)
    service = capture_factory(dsn)
    running = Running(service)
    try:
        wait_for(lambda: service._phase == "streaming", what="streaming")
        execute(totesys_dsn, f"ALTER ROLE {role} PASSWORD '{uuid.uuid4().hex}'")
        drop_connections(totesys_dsn)
        wait_for(running.ended, what="capture to stop")
    finally:
        service.stop.set()
        running.thread.join(timeout=30)
        # the fixture's clean-up connects with the old password: the slot is dropped here
        execute(totesys_dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             f"WHERE slot_name = '{service.config.slot}' AND NOT active",
                f"DROP OWNED BY {role}", f"DROP ROLE {role}")
    assert isinstance(running.error, ConfigError)
    assert f'password authentication failed for user "{role}"' in str(running.error)
    assert password not in str(running.error)


def test_a_slot_of_another_plugin_ends_capture_after_it_has_streamed(totesys_dsn, capture_factory):
    service = capture_factory(totesys_dsn)
    slot = service.config.slot
    running = Running(service)
    try:
        wait_for(lambda: service._phase == "streaming", what="streaming")
        # Swapped in one statement, so a reconnecting capture never finds the slot missing.
        conn_pid = query(totesys_dsn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                         (slot,))[0][0]
        execute(totesys_dsn, f"SELECT pg_terminate_backend({conn_pid})")
        wait_for(lambda: not query(totesys_dsn, "SELECT active FROM pg_replication_slots "
                                   "WHERE slot_name = %s", (slot,))[0][0], what="the slot to be released")
        execute(totesys_dsn, f"SELECT pg_drop_replication_slot('{slot}'), "
                             f"pg_create_logical_replication_slot('{slot}', 'test_decoding')")
        wait_for(running.ended, what="capture to stop")
    finally:
        service.stop.set()
        running.thread.join(timeout=30)
    assert isinstance(running.error, ConfigError)
    assert f"replication slot {slot} uses plugin test_decoding, not pgoutput" in str(running.error)


def _capture_process_until_it_stops(dsn: str, aws_env: dict[str, Any], tmp_path: Any, slot: str,
                                    break_source: Callable[[], None]) -> tuple[int, str]:
    """Run ``totes-cdc capture`` until it streams, ``break_source()``, then (exit code, stderr)."""
    env: dict[str, Any] = {**aws_env, "TOTES_CDC_SOURCE_DSN": dsn}
    process = subprocess.Popen([sys.executable, "-m", "totes_ops", "capture", "--tables", "design",
                                "--slot", slot, "--state-dir", str(tmp_path)],
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        # The slot is active during the initial snapshot too (its creating connection holds the
        # exported snapshot): streaming is a walsender past START_REPLICATION on it.
        wait_for(lambda: bool(query(dsn, "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r "
                                    "ON r.pid = s.active_pid WHERE s.slot_name = %s "
                                    "AND r.state IN ('catchup', 'streaming')", (slot,))), what="streaming")
        break_source()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        execute(dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    return process.returncode, stderr


def test_a_dropped_source_table_stops_the_capture_process_with_exit_2(totesys_dsn, aws_env, tmp_path):
    def drop_table() -> None:
        execute(totesys_dsn, "DROP TABLE design CASCADE")
        drop_connections(totesys_dsn)

    returncode, stderr = _capture_process_until_it_stops(
        totesys_dsn, aws_env, tmp_path, f"drop_{uuid.uuid4().hex[:8]}", drop_table)
    assert returncode == 2, stderr
    assert "source connection lost" in stderr
    assert stderr.strip().splitlines()[-1] == (
        "totes-cdc: error: tables not found in the source database: public.design")


class DropsTheOtherTable(ObjectStore):
    """An object store that drops, at the first put of design or currency, the other of the two:
    the snapshot's one worker has read only the first, so the drop takes no lock from it."""

    def __init__(self, dsn: str) -> None:
        super().__init__(boto3.client("s3"))
        self.dsn = dsn
        self.dropped: str | None = None

    def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        if self.dropped is None:
            self.dropped = "public.currency" if "public.design/" in key else "public.design"
            execute(self.dsn, f"DROP TABLE {self.dropped} CASCADE")
        return super().put_new(bucket, key, body, content_type)


def test_a_table_dropped_during_the_initial_snapshot_is_reported_as_missing(totesys_dsn, capture_factory):
    """Regression: the snapshot's read of a table dropped after the session checked it ended
    capture with the server's error and exit 1; a restart then said the table was missing."""
    objects = DropsTheOtherTable(totesys_dsn)
    service = capture_factory(totesys_dsn, tables=("design", "currency"), snapshot_workers=1,
                              objects=objects)
    running = Running(service)
    running.thread.join(timeout=60)
    assert running.ended() and objects.dropped is not None
    assert isinstance(running.error, ConfigError)
    assert str(running.error) == f"tables not found in the source database: {objects.dropped}"


def test_a_publication_dropped_under_the_stream_stops_the_capture_process_with_exit_1(
        totesys_dsn, aws_env, tmp_path):
    def drop_publication() -> None:
        execute(totesys_dsn, "DROP PUBLICATION totes_cdc")
        seed_designs(totesys_dsn, 1)  # the server cannot decode it for a publication that is gone

    returncode, stderr = _capture_process_until_it_stops(
        totesys_dsn, aws_env, tmp_path, f"pub_{uuid.uuid4().hex[:8]}", drop_publication)
    assert returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("totes-cdc: capture stopped: ")
    assert 'publication "totes_cdc" does not exist' in last
    assert "(SQLSTATE 42704)" in last

"""Capture against a real PostgreSQL and the AWS emulator in server mode."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid

import psycopg2
import pytest

from tests.conftest import query
from tests.integration.capture.conftest import (
    FlakySink,
    Writer,
    assert_versions_exact,
    dedupe,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from tests.integration.capture.lake import positioned, read_lake
from totes_ops.cli import main
from totes_ops.stack import seed
from totes_ops.stack.postgres import LocalPostgres, make_base_dir

pytestmark = pytest.mark.integration


def test_snapshot_and_concurrent_writes_give_each_change_exactly_once(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 400)
    service = capture_factory(totesys_dsn)
    with Writer(totesys_dsn) as writer:
        capture_factory.start(service)
        wait_for(lambda: writer.transactions > 300, what="source writes")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    events = read_lake() + read_stream()
    identities = [e.identity for e in events]
    assert len(identities) == len(set(identities))
    events = positioned(events)
    snapshot = [e for e in events if e.op == "r"]
    assert len(snapshot) >= 400
    assert len({e.seq for e in snapshot}) == len(snapshot) and max(e.seq for e in snapshot) < 0
    assert len({e.lsn for e in snapshot}) == 1
    assert {"c", "u", "d"} <= {e.op for e in events}
    assert_versions_exact(events, totesys_dsn)


def test_partial_put_failures_never_reorder_a_key(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 20)
    # The first record of every other call, among the first 12, is refused, as throttling would.
    service = capture_factory(totesys_dsn, sink=FlakySink(lambda call, i: call <= 12 and call % 2 and i == 0))
    capture_factory.start(service)
    with Writer(totesys_dsn) as writer:
        wait_for(lambda: writer.transactions > 150, what="source writes")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    events = read_stream()
    assert service._sink.refused > 0
    assert len({e.identity for e in events}) == len(events)
    assert_versions_exact(events, totesys_dsn)


def test_kill_9_repeatedly_loses_nothing(totesys_dsn, aws_env, tmp_path):
    seed_designs(totesys_dsn, 200)
    slot = f"kill_{uuid.uuid4().hex[:8]}"
    env = {**aws_env, "TOTES_CDC_SOURCE_DSN": totesys_dsn}
    command = [sys.executable, "-m", "totes_ops", "capture", "--tables", "design", "--slot", slot,
               "--state-dir", str(tmp_path), "--heartbeat-seconds", "0.5", "--max-batch-delay-ms", "20"]
    try:
        with Writer(totesys_dsn) as writer:
            for kill_after in (1.0, 1.5, 2.0):
                process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
                # Until the slot exists, "caught up" would hold at once (a new slot starts at the
                # current WAL position) and a kill would only test process start-up.
                wait_for(lambda: bool(query(totesys_dsn, "SELECT 1 FROM pg_replication_slots "
                                                         "WHERE slot_name = %s", (slot,))),
                         what="the slot")
                seen = writer.transactions
                wait_for(lambda: writer.transactions > seen + 100, what="source writes")
                time.sleep(kill_after)
                process.kill()
                process.wait()
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        wait_for(slot_caught_up(totesys_dsn, slot), what="capture to catch up")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        execute(totesys_dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    events = positioned(read_lake() + read_stream())
    assert_versions_exact(events, totesys_dsn, snapshot_repeats=True)


def test_truncate_and_a_column_added_mid_stream(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 3)
    service = capture_factory(totesys_dsn)
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(totesys_dsn, "ALTER TABLE design ADD COLUMN colour text",
            "INSERT INTO design (design_name, file_location, file_name, last_updated, colour) "
            "VALUES ('0', '/d', 'x', now(), 'red')",
            "ALTER TABLE design DROP COLUMN file_location",
            "UPDATE design SET design_name = '1' WHERE design_id = 1",
            "TRUNCATE design CASCADE")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    events = sorted(read_stream(), key=lambda e: (e.lsn, e.seq))
    insert, update, truncate = [e for e in events if not e.snapshot]
    assert insert.op == "c" and insert.after["colour"] == "red"
    assert [c.type for c in insert.columns if c.name == "colour"] == ["text"]
    assert update.op == "u" and "file_location" not in update.after and "colour" in update.after
    assert truncate.op == "t" and truncate.table == "design" and truncate.after is None


def test_quiet_source_heartbeats_keep_the_slot_moving(totesys_dsn, capture_factory):
    service = capture_factory(totesys_dsn, heartbeat_seconds=0.2)
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    # WAL the captured tables do not see: without heartbeats the slot would hold it all.
    execute(totesys_dsn, "CREATE TABLE other AS SELECT g FROM generate_series(1, 20000) g")
    for _ in range(2):
        wait_for(slot_caught_up(totesys_dsn, service.config.slot), timeout=20, what="the slot to advance")
        execute(totesys_dsn, "INSERT INTO other SELECT generate_series(1, 1000)")
    status = json.loads((service._publisher.status_path).read_text())
    assert status["phase"] == "streaming" and status["slot"] == service.config.slot
    assert read_stream() == []


def test_a_publication_named_in_capitals_streams(totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 3)
    service = capture_factory(totesys_dsn, publication=f"Totes_{uuid.uuid4().hex[:6]}")
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(totesys_dsn, "UPDATE design SET design_name = 'renamed'")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    assert [e.op for e in read_stream()] == ["u"] * 3
    assert query(totesys_dsn, "SELECT pubname FROM pg_publication") == [(service.config.publication,)]


def test_source_restart_reconnects_and_resumes(capture_factory):
    base = make_base_dir()
    server = LocalPostgres(base / "pg")
    server.init()
    server.start()
    try:
        dsn = server.dsn()
        conn = psycopg2.connect(dsn)
        seed.create_schema(conn)
        conn.close()
        seed_designs(dsn, 10)
        service = capture_factory(dsn)
        capture_factory.start(service)
        wait_for(lambda: service._phase == "streaming", what="streaming")
        execute(dsn, "UPDATE design SET design_name = '1'")
        server.restart()
        execute(dsn, "UPDATE design SET design_name = '2'")
        wait_for(slot_caught_up(dsn, service.config.slot), what="capture to catch up after the restart")
        service.stop.set()
        events = dedupe(read_stream())
        assert_versions_exact(events, dsn)
        assert sum(e.op == "u" for e in events) == 20
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def test_snapshot_of_bigint_keys_enums_and_a_table_without_key(source_dsn, capture_factory):
    execute(source_dsn,
            'CREATE TYPE "Mood" AS ENUM (\'happy\', \'sad\')',
            'CREATE TABLE big (id bigint PRIMARY KEY, mood "Mood", ok boolean, price numeric(10,2))',
            "INSERT INTO big SELECT g, 'sad', g % 2 = 0, g * 1.25 FROM generate_series(1, 120) g",
            "CREATE TABLE nokey (a integer, b text)",
            "ALTER TABLE nokey REPLICA IDENTITY FULL",
            "INSERT INTO nokey SELECT g, 'x' FROM generate_series(1, 70) g")
    service = capture_factory(source_dsn, tables=("big", "public.nokey"))
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    execute(source_dsn, "UPDATE big SET ok = true WHERE id = 1", "DELETE FROM nokey WHERE a = 1")
    wait_for(slot_caught_up(source_dsn, service.config.slot), what="capture to catch up")
    events = read_lake() + read_stream()
    big = sorted((e for e in events if e.table == "big"), key=lambda e: (e.lsn, e.seq))
    assert [e.op for e in big].count("r") == 120 and big[-1].op == "u"
    first = next(e for e in big if e.after["id"] == "1")
    assert first.after == {"id": "1", "mood": "sad", "ok": "f", "price": "1.25"}
    assert big[-1].after["ok"] == "t"  # snapshot and stream print values alike
    assert [c.type for c in first.columns] == ["bigint", '"Mood"', "boolean", "numeric(10,2)"]
    nokey = [e for e in events if e.table == "nokey"]
    assert sum(e.op == "r" for e in nokey) == 70
    assert [e.before for e in nokey if e.op == "d"] == [{"a": "1", "b": "x"}]


def test_a_source_without_logical_decoding_is_a_clear_config_error(warehouse_dsn, aws, capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", warehouse_dsn)
    assert main(["capture", "--state-dir", str(tmp_path)]) == 2
    assert ("set wal_level = logical in postgresql.conf (on RDS: rds.logical_replication = 1) and "
            "restart the server") in capsys.readouterr().err

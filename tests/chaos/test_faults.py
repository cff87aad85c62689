"""Faults injected into the running pipeline under steady simulated traffic; after each, the
warehouse must reconcile with the source: nothing lost, no fact version stored twice.

The scenarios share one stack (module fixture ``chaos``) and run in this order; each leaves the
pipeline running for the next. Random moments and choices come from ``TOTES_CDC_CHAOS_SEED``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg2
import pytest

from tests.chaos.conftest import COMPONENTS, ChaosStack, Scenario
from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings
from totes_ops.stack.postgres import LocalPostgres

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

KILLS_PER_COMPONENT = 3
WAREHOUSE_OUTAGE_SECONDS = 30.0
STALL_SECONDS = 20  # five times the source's wal_sender_timeout (tests/chaos/conftest.py)
LONG_TRANSACTION_EVERY = 8  # the stall's long transaction updates every 8th payment
POISON_PARTITION_KEY = "chaos-poison"


def test_kill_9_of_each_component_repeatedly(chaos: ChaosStack, scenario: Scenario) -> None:
    """kill -9 of capture, the stream processor runner and the loader runner, 3 times each"""
    kills = [c for c in COMPONENTS for _ in range(KILLS_PER_COMPONENT)]
    chaos.rng.shuffle(kills)
    with chaos.traffic() as traffic:
        for component in kills:
            delay = chaos.rng.uniform(0.5, 3.0)
            time.sleep(delay)
            pid = chaos.kill(component)
            scenario.fault(f"kill -9 {component} (pid {pid}), {delay:.1f} s after the previous fault")
        time.sleep(2)
    scenario.check(traffic)
    assert all(scenario.record["restarts"].get(c, 0) >= KILLS_PER_COMPONENT for c in COMPONENTS)


def test_kinesis_stall_through_keepalives_then_kill_9_of_capture(chaos: ChaosStack,
                                                                 scenario: Scenario) -> None:
    """a long transaction open, Kinesis stalled for 20 s through keepalives, then kill -9 of capture"""
    before = chaos.proxy.counts()
    batch = psycopg2.connect(chaos.stack.source_dsn)
    with chaos.traffic() as traffic:
        # A batch job's transaction: its changes are written now, before commits that capture
        # acknowledges, and it commits during the stall.
        with batch.cursor() as cur:
            cur.execute("UPDATE payment SET last_updated = last_updated + interval '1 ms' "
                        "WHERE payment_id %% %s = 0", (LONG_TRANSACTION_EVERY,))
            updated = cur.rowcount
        scenario.fault(f"long transaction opened: {updated:,} payments updated, not committed")
        time.sleep(3)
        chaos.proxy.stall()
        began = time.monotonic()
        confirmed, _ = _replication(chaos)
        scenario.fault(f"Kinesis stalled: every PutRecords call held unanswered (slot confirmed "
                       f"{confirmed})")
        samples = []
        while time.monotonic() - began < STALL_SECONDS:
            time.sleep(1)
            samples.append((time.monotonic() - began, *_replication(chaos)))
            if len(samples) == STALL_SECONDS // 2:
                batch.commit()
                scenario.fault("long transaction committed, the stall still on")
        batch.close()
        pid = chaos.kill("capture")
        scenario.fault(f"kill -9 capture (pid {pid}), the stall still on (slot confirmed "
                       f"{samples[-1][1]})")
        time.sleep(2)
        chaos.proxy.release()
        scenario.fault("stall over: the held PutRecords calls forwarded")
        time.sleep(3)
    stalled = chaos.proxy.counts()["put_records_stalled"] - before["put_records_stalled"]
    scenario.record["injected"] = {"put_records_stalled": stalled}
    replies = {reply for _, _, reply in samples if reply is not None}
    moves, seen = [], confirmed
    for at, position, _ in samples:
        if position != seen:
            moves.append(f"{position} at +{at:.0f} s")
            seen = position
    scenario.source_change("payments updated by the long transaction", updated)
    scenario.note(f"during the {STALL_SECONDS} s stall the source's walsender recorded "
                  f"{len(replies)} distinct reply times from capture (sampled once a second); the "
                  f"slot's confirmed position moved to: {', '.join(moves) or 'nowhere'}")
    scenario.check(traffic)
    assert stalled > 0


def _replication(chaos: ChaosStack) -> tuple[str | None, Any]:
    """The slot's confirmed position and the walsender's last reply from capture (None: none)."""
    rows = _query(chaos, "SELECT s.confirmed_flush_lsn::text, r.reply_time FROM pg_replication_slots s "
                         "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
                         "WHERE s.slot_name = %s", (settings()["capture"]["slot"],))
    return rows[0] if rows else (None, None)


def test_source_restart_mid_stream(chaos: ChaosStack, scenario: Scenario) -> None:
    """the source PostgreSQL server restarted mid-stream"""
    with chaos.traffic() as traffic:
        time.sleep(3)
        began = time.monotonic()
        chaos.server("source").restart()
        scenario.fault(f"source server restarted (pg_ctl stop -m fast, start) in "
                       f"{time.monotonic() - began:.1f} s: every session, the replication one too, cut")
        time.sleep(5)
    scenario.check(traffic)


def test_warehouse_unavailable_for_30_s(chaos: ChaosStack, scenario: Scenario) -> None:
    """the warehouse server stopped for 30 s, then started again"""
    warehouse = chaos.server("warehouse")
    with chaos.traffic() as traffic:
        time.sleep(2)
        warehouse.stop()
        scenario.fault("warehouse server stopped (pg_ctl stop -m fast)")
        time.sleep(WAREHOUSE_OUTAGE_SECONDS)
        busy = _start_when_port_free(warehouse)
        scenario.fault(f"warehouse server started again after {WAREHOUSE_OUTAGE_SECONDS:.0f} s")
        if busy:
            scenario.note(f"the warehouse's port was held by another socket at {busy} start "
                          "attempt(s) (a client's outgoing connection); started once it was free")
        time.sleep(3)
    scenario.check(traffic)


def test_put_records_throttling_and_partial_failures_then_s3_put_failures(
        chaos: ChaosStack, scenario: Scenario) -> None:
    """Kinesis PutRecords throttled and partially failed, then S3 PutObject failing"""
    before = chaos.proxy.counts()
    with chaos.traffic() as traffic:
        time.sleep(1)
        chaos.proxy.set_faults(put_records_throttled=0.2, put_records_partial=0.5,
                               failed_record_share=0.5)
        scenario.fault("PutRecords: 20% of calls throttled (400 ProvisionedThroughputExceededException),"
                       " half of the rest with about half their records failed")
        time.sleep(8)
        chaos.proxy.set_faults(s3_put_failed=0.5)
        scenario.fault("S3 PutObject: 50% answered 503 SlowDown")
        time.sleep(6)
        chaos.proxy.set_faults(s3_put_failed=1.0)
        scenario.fault("S3 PutObject: every call answered 503 SlowDown")
        time.sleep(4)
        chaos.proxy.set_faults()
        scenario.fault("faults off")
        time.sleep(2)
    injected = {k: v - before[k] for k, v in chaos.proxy.counts().items()}
    scenario.record["injected"] = injected
    scenario.check(traffic)
    assert injected["put_records_throttled"] > 0
    assert injected["records_failed"] > 0
    assert injected["s3_puts_failed"] > 0


def test_poison_record_and_malformed_file_are_dead_lettered(chaos: ChaosStack, scenario: Scenario) -> None:
    """a garbage Kinesis record and a malformed Parquet file"""
    s = settings()
    malformed_key = (f"{s['prefixes']['processed']}public.sales_order/chaos-malformed"
                     f"{s['suffixes']['processed']}")
    with chaos.traffic() as traffic:
        time.sleep(2)
        chaos.view.client("kinesis").put_record(StreamName=s["stream"]["name"],
                                                PartitionKey=POISON_PARTITION_KEY,
                                                Data=b"\x00\x01 not a change event")
        scenario.fault(f"garbage record put on the stream (partition key {POISON_PARTITION_KEY})")
        chaos.view.client("s3").put_object(Bucket=s["buckets"]["processed"], Key=malformed_key,
                                           Body=b"PAR1 this is not a Parquet file PAR1")
        scenario.fault(f"malformed file uploaded: s3://{s['buckets']['processed']}/{malformed_key}")
        time.sleep(4)

    record_reasons = _dead_letter_reasons(chaos, s["prefixes"]["dead_letter_records"], POISON_PARTITION_KEY)
    file_reasons = _dead_letter_reasons(chaos, s["prefixes"]["dead_letter_files"], malformed_key)
    scenario.record["dead_letters"] = {**record_reasons, **file_reasons}
    assert record_reasons, "the garbage record was not dead-lettered with a reason"
    assert file_reasons, "the malformed file was not dead-lettered with a reason"

    status = chaos.view.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    alerts = json.loads(status.stdout)["alerts"]
    scenario.record["alerts"] = alerts
    assert any("dead-letter" in alert for alert in alerts), alerts
    scenario.check(traffic)


def test_add_column_mid_stream(chaos: ChaosStack, scenario: Scenario) -> None:
    """ALTER TABLE ... ADD COLUMN at the source mid-stream"""
    with chaos.traffic() as traffic:
        time.sleep(2)
        _execute(chaos, ("ALTER TABLE sales_order ADD COLUMN chaos_note text", ()))
        scenario.fault("ALTER TABLE sales_order ADD COLUMN chaos_note text")
        time.sleep(1)
        updated = _execute(chaos, ("UPDATE sales_order SET chaos_note = %s, last_updated = now() "
                                   "WHERE sales_order_id IN (SELECT sales_order_id FROM sales_order "
                                   "ORDER BY sales_order_id DESC LIMIT 10)", ("after ADD COLUMN",)))
        scenario.source_change("sales orders updated with the new column set", updated)
        time.sleep(3)
    scenario.check(traffic)


def test_truncate_mid_stream(chaos: ChaosStack, scenario: Scenario) -> None:
    """TRUNCATE at the source mid-stream"""
    with chaos.traffic() as traffic:
        time.sleep(2)
        # payment: the one totesys table nothing references. Counted under the TRUNCATE's lock.
        truncated = _execute(chaos, ("LOCK TABLE payment IN ACCESS EXCLUSIVE MODE", ()),
                             ("SELECT count(*) FROM payment", ()), ("TRUNCATE payment", ()))
        scenario.fault("TRUNCATE payment")
        scenario.source_change("payments removed by TRUNCATE", truncated)
        time.sleep(4)
    scenario.check(traffic)


def _start_when_port_free(server: LocalPostgres, timeout: float = 60.0) -> int:
    """Start ``server``; how many attempts found its port taken.

    The port is an ephemeral-range one, so while the server is down a client's outgoing
    connection (or a reconnecting client's TCP self-connect) can hold it for a moment.
    """
    deadline = time.monotonic() + timeout
    busy = 0
    while True:
        try:
            server.start()
            return busy
        except ConfigError as exc:
            if "already in use" not in str(exc) or time.monotonic() > deadline:
                raise
            busy += 1
            time.sleep(1)


def _execute(chaos: ChaosStack, *statements: tuple[str, tuple[Any, ...]]) -> int:
    """Run ``statements`` in one source transaction: what a SELECT among them counted, else the
    last one's row count."""
    conn = psycopg2.connect(chaos.stack.source_dsn)
    try:
        with conn, conn.cursor() as cur:
            counted = None
            for statement, params in statements:
                cur.execute(statement, params)
                if statement.startswith("SELECT"):
                    counted = int(cur.fetchone()[0])
            return cur.rowcount if counted is None else counted
    finally:
        conn.close()


def _query(chaos: ChaosStack, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(chaos.stack.source_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def _dead_letter_reasons(chaos: ChaosStack, prefix: str, mention: str,
                         timeout: float = 60.0) -> dict[str, str]:
    """{dead-letter object key: reason} for JSON documents under ``prefix`` that mention ``mention``."""
    s3, bucket = chaos.view.client("s3"), settings()["buckets"]["dead_letter"]
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                try:
                    document = json.loads(body)
                except ValueError:
                    continue  # the bad object itself, kept next to its reason
                if isinstance(document, dict) and mention in json.dumps(document):
                    reason = document.get("reason") or document.get("error")
                    if reason:
                        found[f"s3://{bucket}/{obj['Key']}"] = str(reason)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)

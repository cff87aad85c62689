"""End to end on the real totesys data: snapshot, a script of business changes, a replay.

`totes-cdc up` runs against fresh servers; the test acts only as a user would: it changes the
source with SQL, then asks `totes-cdc reconcile` whether the warehouse matches.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import psycopg2
import pytest

from tests.conftest import requires_real_data
from tests.e2e.conftest import processed_keys, stop_stack
from totes_cdc.settings import settings

pytestmark = [pytest.mark.e2e, requires_real_data]

FACTS = ("fact_sales_order", "fact_purchase_order", "fact_payment")


def fact_counts(dsn: str) -> dict[str, int]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            counts = {}
            for table in FACTS:
                cur.execute(f"SELECT count(*) FROM {table}")  # fixed names
                counts[table] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def waterfall(dsn: str) -> dict[str, tuple[object, ...]]:
    """The latency waterfall's rows by file: streamed events, then every stage in ms."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT file_key, streamed_events, commit_to_capture_p50_ms,"
                        " commit_to_capture_p99_ms, capture_to_kinesis_ms, kinesis_to_processor_ms,"
                        " processor_to_file_ms,"
                        " file_to_warehouse_ms, end_to_end_p50_ms, end_to_end_p99_ms FROM pipeline_latency")
            return {row[0]: row[1:] for row in cur.fetchall()}
    finally:
        conn.close()


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not ours does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def business_changes(stack) -> None:
    """New orders, payments flipping to paid, an address edit, a department rename,
    a new currency and a deleted order, each as its own source transaction."""
    for units in (100, 250, 75):
        stack.execute([
            ("INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id,"
             " units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date,"
             " agreed_delivery_location_id) VALUES (now(), now(), 5, 3, 7, %s, 3.25, 1,"
             " '2026-12-04', '2026-12-06', 9) RETURNING sales_order_id", (units,)),
            ("INSERT INTO transaction (transaction_type, sales_order_id, last_updated)"
             " VALUES ('SALE', currval('sales_order_sales_order_id_seq'), now())", ()),
            ("INSERT INTO payment (last_updated, transaction_id, counterparty_id, payment_amount,"
             " currency_id, payment_type_id, paid, payment_date, company_ac_number,"
             " counterparty_ac_number) VALUES (now(), currval('transaction_transaction_id_seq'), 7,"
             " %s, 1, 1, false, '2026-12-06', 12345678, 87654321)", (units * 3.25,)),
        ])
    stack.execute([("UPDATE payment SET paid = true, last_updated = now() WHERE payment_id IN"
                    " (SELECT payment_id FROM payment WHERE NOT paid ORDER BY payment_id LIMIT 25)",
                    ())])
    stack.execute([("UPDATE address SET address_line_1 = '1 Relocated Road', last_updated = now()"
                    " WHERE address_id = (SELECT legal_address_id FROM counterparty"
                    " ORDER BY counterparty_id LIMIT 1)", ())])
    stack.execute([("UPDATE department SET department_name = 'Sales and Marketing',"
                    " last_updated = now() WHERE department_id = 1", ())])
    stack.execute([("INSERT INTO currency (currency_code, last_updated) VALUES ('JPY', now())", ())])
    stack.execute([("DELETE FROM sales_order WHERE sales_order_id = 42", ())])


def replay_processed_files(stack) -> int:
    """Announce every processed file to the loader again, as an operator's re-drive would."""
    sqs = stack.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=settings()["queues"]["processed_files"])["QueueUrl"]
    bucket = settings()["buckets"]["processed"]
    keys = processed_keys(stack)
    for start in range(0, len(keys), 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": settings()["region"],
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": urllib.parse.quote(key)}}}]})}
            for i, key in enumerate(keys[start:start + 10])]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        if attrs["ApproximateNumberOfMessages"] == "0" and \
                attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
            return len(keys)
        time.sleep(1)
    raise AssertionError("the loader did not drain the replayed files")


def test_snapshot_changes_and_replay_reconcile(real_stack):
    stack = real_stack
    report = stack.wait_reconciled()
    assert report["exit_code"] == 0, json.dumps(report, indent=1)[:4000]
    snapshot_counts = fact_counts(stack.warehouse_dsn)
    assert snapshot_counts == {"fact_sales_order": 11187, "fact_purchase_order": 4649,
                               "fact_payment": 15836}

    business_changes(stack)
    report = stack.wait_reconciled()
    assert report["exit_code"] == 0, json.dumps(report, indent=1)[:4000]
    after_changes = fact_counts(stack.warehouse_dsn)
    # 3 new orders; 3 new payments + 25 flipped; 1 deleted order (a tombstone).
    assert after_changes["fact_sales_order"] == 11187 + 3 + 1
    assert after_changes["fact_payment"] == 15836 + 3 + 25
    # The business changes' files measure every hop (one machine, one clock: none negative).
    stages = waterfall(stack.warehouse_dsn)
    streamed = [row[1:] for row in stages.values() if row[0]]
    assert streamed and all(ms is not None and ms >= 0 for row in streamed for ms in row)

    replayed = replay_processed_files(stack)
    assert replayed > 0
    report = stack.wait_reconciled()
    assert report["exit_code"] == 0, json.dumps(report, indent=1)[:4000]
    assert fact_counts(stack.warehouse_dsn) == after_changes
    # Every processed file of the stream has its row (the snapshot's lake files and markers have
    # no stream stages); a file applied again keeps its first one.
    replayed_stages = waterfall(stack.warehouse_dsn)
    assert sorted(replayed_stages) == sorted(k for k in processed_keys(stack) if "/snapshot-" not in k)
    assert {key: replayed_stages[key] for key in stages} == stages

    pids = [*stack.refresh()["components"].values(), *stack.info["processes"].values()]
    output = stop_stack(stack)
    assert "stopped" in output
    assert stack.process.returncode == 0
    left = [pid for pid in pids if alive(pid)]
    assert left == [], f"processes left running after Ctrl-C: {left}"

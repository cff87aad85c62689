"""The loader's retry budget rides out a warehouse outage: nothing reaches the DLQ, and afterwards
the warehouse reconciles with the source.

Timers scaled down 120 times from settings.json: the queue's visibility timeout 720 s -> 6 s, with
settings' max_receive_count (10) unchanged, so the budget is 60 s; the outage 1 h -> 30 s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from local_aws.sqs_runner import Runner
from tests.conftest import query
from tests.integration.capture.conftest import seed_designs, wait_for
from tests.integration.warehouse_loader.files import event, object_key, parquet_bytes, source_columns
from totes_cdc.settings import settings
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader.reconcile import reconcile

pytestmark = pytest.mark.integration

SCALE = 120
VISIBILITY_SECONDS = settings()["loader_mapping"]["visibility_timeout_seconds"] // SCALE
OUTAGE_SECONDS = 3600 / SCALE


@pytest.fixture
def warehouse(pg_base_dir: Path) -> Iterator[LocalPostgres]:
    """A warehouse server of this test's own, to stop and start."""
    server = LocalPostgres(pg_base_dir / f"outage-{uuid.uuid4().hex[:8]}", logical=False)
    server.init()
    server.start()
    yield server
    server.stop(mode="immediate")


def depth(sqs: Any, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_a_one_hour_warehouse_outage_sends_nothing_to_the_dlq_and_reconciles(
        aws: Any, totesys_dsn: str, warehouse: LocalPostgres) -> None:
    cfg = settings()
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    queue = sqs.get_queue_url(QueueName=cfg["queues"]["processed_files"])["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": str(VISIBILITY_SECONDS)})
    warehouse_dsn = warehouse.create_database(f"wh_{uuid.uuid4().hex[:8]}")

    # The source's designs, as the stream processor writes them: snapshot reads, one file each.
    seed_designs(totesys_dsn, 6)
    conn = psycopg2.connect(totesys_dsn)
    columns = source_columns(conn, "design")
    conn.close()
    names = [c.name for c in columns]
    rows = query(totesys_dsn, f"SELECT {', '.join(f'{n}::text' for n in names)} FROM design ORDER BY 1")

    stop = threading.Event()
    runner = Runner(warehouse_dsn, stop, workers=2)
    runner.migrate()  # before the outage; then its workers poll as Runner.run has them do
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True) for worker in runner.workers]
    for thread in threads:
        thread.start()
    try:
        warehouse.stop()
        started = time.monotonic()
        for lsn, row in enumerate(rows, start=100):
            data = parquet_bytes(columns, [event("r", lsn, -1, dict(zip(names, row, strict=True)))])
            s3.put_object(Bucket=cfg["buckets"]["processed"], Key=object_key("design", lsn, lsn),
                          Body=data)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
        assert depth(sqs, cfg["queues"]["processed_files"]) >= len(rows)  # all failed, none dropped
        warehouse.start()
        wait_for(lambda: depth(sqs, cfg["queues"]["processed_files"]) == 0, timeout=90,
                 what="the queue to drain")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert depth(sqs, cfg["queues"]["processed_files_dlq"]) == 0
    dead = s3.list_objects_v2(Bucket=cfg["buckets"]["dead_letter"]).get("Contents", [])
    assert dead == []
    report = reconcile(totesys_dsn, warehouse_dsn)
    assert sum(t.differences for t in report.tables) == 0
    assert sum(t.compared for t in report.tables) >= len(rows)

"""The loader behind the real queue: S3 notification → SQS → runner/Lambda handler → warehouse."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import botocore.exceptions
import psycopg2
import pyarrow.parquet as pq
import pytest
from aws_lambda_powertools.utilities import parameters

from local_aws.sqs_runner import Runner, Worker
from tests.conftest import query
from tests.integration.warehouse_loader.files import event, object_key, parquet_bytes, snapshot_key
from tests.integration.warehouse_loader.test_apply import design, payment, sales_order
from totes_cdc.contract import snapshot_seq
from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings
from totes_cdc.snapshot_marker import is_snapshot_key
from warehouse_loader import handler
from warehouse_loader.config import LoaderConfig
from warehouse_loader.handler import Loader

pytestmark = pytest.mark.integration


def put(aws, key: str, data: bytes) -> None:
    aws.client("s3").put_object(Bucket=settings()["buckets"]["processed"], Key=key, Body=data)


def count_rows(dsn: str, table: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def poll_until(worker: Worker, done, attempts: int = 20) -> None:
    for _ in range(attempts):
        worker.poll_once(wait_seconds=1)
        if done():
            return
    raise AssertionError("the runner did not get there")


def queue_attribute(aws, name: str) -> int:
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=settings()["queues"]["processed_files"])["QueueUrl"]
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])["Attributes"][name])


@pytest.fixture
def runner(aws, warehouse_dsn):
    """One worker of a runner on a migrated warehouse, polled by the test."""
    runner = Runner(warehouse_dsn, threading.Event(), workers=1)
    runner.migrate()
    worker = runner.workers[0]
    yield worker
    worker.loader.close()


def test_bad_file_is_dead_lettered_and_the_next_file_still_loads(aws, runner, warehouse_dsn,
                                                                 totesys_columns):
    bad_key = object_key("payment", 1, 1)
    put(aws, bad_key, b"PAR1 truncated")
    put(aws, object_key("payment", 2, 3), parquet_bytes(totesys_columns["payment"], [
        event("r", 100, 1, payment(1)), event("u", 200, 1, payment(1, paid="true"))]))

    poll_until(runner, lambda: count_rows(warehouse_dsn, "fact_payment") == 2)
    poll_until(runner, lambda: queue_attribute(aws, "ApproximateNumberOfMessages") == 0)

    s3 = aws.client("s3")
    dead = settings()["buckets"]["dead_letter"]
    target = settings()["prefixes"]["dead_letter_files"] + bad_key
    assert s3.get_object(Bucket=dead, Key=target)["Body"].read() == b"PAR1 truncated"
    record = json.loads(s3.get_object(Bucket=dead, Key=f"{target}.error.json")["Body"].read())
    assert record["key"] == bad_key and "unreadable Parquet" in record["reason"]
    assert queue_attribute(aws, "ApproximateNumberOfMessagesNotVisible") == 0
    names = {m["MetricName"] for m in aws.client("cloudwatch").list_metrics(
        Namespace=settings()["metrics_namespace"])["Metrics"]}
    assert {"FilesLoaded", "FactRowsAppended", "EndToEndLatencyMs", "FilesDeadLettered"} <= names


def test_unreachable_warehouse_leaves_the_message_for_redelivery(aws, totesys_columns):
    runner = Runner("host=127.0.0.1 port=1 dbname=wh user=u connect_timeout=2", threading.Event(),
                    workers=1).workers[0]
    put(aws, object_key("design", 1, 1),
        parquet_bytes(totesys_columns["design"], [event("r", 1, 1, design(1))]))

    poll_until(runner, lambda: queue_attribute(aws, "ApproximateNumberOfMessagesNotVisible") == 1)
    assert queue_attribute(aws, "ApproximateNumberOfMessages") == 0
    assert "Contents" not in aws.client("s3").list_objects_v2(
        Bucket=settings()["buckets"]["dead_letter"])


def test_handler_takes_the_warehouse_from_secrets_manager(aws, warehouse, warehouse_dsn,
                                                                 totesys_columns, monkeypatch):
    p = psycopg2.extensions.parse_dsn(warehouse_dsn)
    secret = {"host": p["host"], "port": int(p["port"]), "dbname": p["dbname"],
              "username": p["user"], "password": p.get("password", ""), "sslmode": "disable"}
    aws.client("secretsmanager").create_secret(Name="wh-secret", SecretString=json.dumps(secret))
    monkeypatch.delenv(handler.DSN_ENV, raising=False)
    monkeypatch.setenv(handler.SECRET_ENV, "wh-secret")
    parameters.clear_caches()  # a client made before the emulator's environment was set is stale
    key = object_key("design", 1, 1)
    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": settings()["buckets"]["processed"]},
        "object": {"key": key.replace("=", "%3D"), "size": 1}}}]})
    put(aws, key, parquet_bytes(totesys_columns["design"], [event("r", 1, 1, design(1))]))
    context = SimpleNamespace(function_name="loader", memory_limit_in_mb=512, aws_request_id="1",
                              invoked_function_arn="arn:aws:lambda:eu-west-2:1:function:loader")
    records = [{"messageId": "m1", "receiptHandle": "r1", "body": body, "attributes": {},
                "messageAttributes": {}, "eventSource": "aws:sqs"},
               {"messageId": "m2", "receiptHandle": "r2", "body": json.dumps({"Event": "s3:TestEvent"}),
                "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"},
               {"messageId": "m3", "receiptHandle": "r3", "body": "not json", "attributes": {},
                "messageAttributes": {}, "eventSource": "aws:sqs"}]
    try:
        assert handler.handler({"Records": records}, context) == {"batchItemFailures": []}
    finally:
        handler._lambda_loader().close()
        handler._lambda_loader.cache_clear()
    with warehouse.cursor() as cur:
        cur.execute("SELECT design_name FROM dim_design")
        assert cur.fetchall() == [("Wooden",)]
    # the message that is not a notification is kept, with why, and the queue moved on
    kept = aws.client("s3").get_object(Bucket=settings()["buckets"]["dead_letter"],
                                       Key=f"{settings()['prefixes']['dead_letter_files']}messages/m3")
    assert kept["Body"].read() == b"not json"


def test_load_command_runs_until_sigterm(aws, aws_env, warehouse_dsn, totesys_columns):
    env = {**aws_env, "TOTES_CDC_WAREHOUSE_DSN": warehouse_dsn}
    proc = subprocess.Popen([sys.executable, "-m", "totes_ops", "load"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        put(aws, object_key("design", 1, 1),
            parquet_bytes(totesys_columns["design"], [event("r", 1, 1, design(1))]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if count_rows(warehouse_dsn, "dim_design") == 1:
                    break
            except psycopg2.Error:
                pass  # not migrated yet
            time.sleep(0.2)
        assert count_rows(warehouse_dsn, "dim_design") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    assert "loader stopped" in output
    assert warehouse_dsn not in output


def test_a_missing_queue_is_a_config_error(aws, warehouse_dsn):
    sqs = aws.client("sqs")
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(
        QueueName=settings()["queues"]["processed_files"])["QueueUrl"])
    with pytest.raises(ConfigError, match="cannot use the queue totes-cdc-processed-files"):
        Runner(warehouse_dsn, threading.Event())


def test_run_keeps_polling_through_aws_errors_until_stopped(aws, warehouse_dsn, monkeypatch, caplog):
    stop = threading.Event()
    runner = Runner(warehouse_dsn, stop, workers=1)
    calls = []

    def poll_once():
        calls.append(1)
        if len(calls) == 1:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        stop.set()
        return 0

    monkeypatch.setattr(runner.workers[0], "poll_once", poll_once)
    runner.run()
    assert len(calls) == 2
    assert "polling" in caplog.text and "failed, retrying" in caplog.text


def test_by_default_as_many_workers_as_the_production_mappings_run(aws, warehouse_dsn):
    workers = Runner(warehouse_dsn, threading.Event()).workers
    live = [w for w in workers if w.name.startswith("loader-")]
    snapshot = [w for w in workers if w.name.startswith("snapshot-loader-")]
    assert len(live) == settings()["loader_mapping"]["maximum_concurrency"] >= 2
    assert len(snapshot) == settings()["snapshot_loader_mapping"]["maximum_concurrency"] >= 2
    assert len(live) + len(snapshot) == len(workers)
    assert len({id(w.loader) for w in workers}) == len(workers)


def test_workers_apply_files_concurrently_each_on_its_own_connection(aws, warehouse_dsn,
                                                                     totesys_columns):
    """Three workers each hold a committed file at the same moment (a barrier proves it), with
    three warehouse sessions open; every file is applied once and every message deleted."""
    workers, files = 3, 30
    connections = []

    def count_sessions() -> None:
        connections.append(query(warehouse_dsn, "SELECT count(*) FROM pg_stat_activity "
                                                "WHERE datname = current_database() "
                                                "AND pid <> pg_backend_pid()")[0][0])

    barrier = threading.Barrier(workers, action=count_sessions, timeout=60)

    class WaitingLoader(Loader):
        """Waits, after its first committed file, until every worker has committed one."""

        waited = False

        def load(self, bucket: str, key: str) -> None:
            super().load(bucket, key)
            if not self.waited:
                self.waited = True
                barrier.wait()

    stop = threading.Event()
    config = LoaderConfig.from_settings(lambda: warehouse_dsn)
    runner = Runner(warehouse_dsn, stop, workers=workers,
                    loader_factory=lambda m, s3, sqs: WaitingLoader(config, m.add, s3, sqs))
    runner.migrate()
    for n in range(1, files + 1):
        put(aws, object_key("payment", n, n), parquet_bytes(totesys_columns["payment"], [
            event("r", 100, n, payment(n)), event("u", 200 + n, 1, payment(n, paid="true"))]))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while (count_rows(warehouse_dsn, "fact_payment") < 2 * files
               or queue_attribute(aws, "ApproximateNumberOfMessages")
               or queue_attribute(aws, "ApproximateNumberOfMessagesNotVisible")):
            assert time.monotonic() < deadline and thread.is_alive(), "not every file was loaded"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not barrier.broken and connections and connections[0] >= workers
    assert count_rows(warehouse_dsn, "fact_payment") == 2 * files
    assert count_rows(warehouse_dsn, "fact_payment_current WHERE paid") == files


def test_a_worker_that_fails_unexpectedly_stops_the_runner(aws, warehouse_dsn, monkeypatch):
    runner = Runner(warehouse_dsn, threading.Event(), workers=2)

    def broken(wait_seconds: int = 0) -> int:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(runner.workers[1], "poll_once", broken)
    with pytest.raises(RuntimeError, match="unexpected"):
        runner.run()


def test_the_streams_files_load_while_a_snapshot_file_loads(aws, warehouse_dsn, totesys_columns):
    """A snapshot read's file announced on the processed files' queue is passed on to the snapshot
    files' queue and applied by that queue's workers: while its load is held, every file of the
    stream is applied by the one worker of the stream's queue; then the snapshot file is applied."""
    held, release = threading.Event(), threading.Event()
    sqs = aws.client("sqs")
    config = LoaderConfig.from_settings(lambda: warehouse_dsn, snapshot_queue_url=sqs.get_queue_url(
        QueueName=settings()["queues"]["snapshot_files"])["QueueUrl"])

    class HoldingLoader(Loader):
        def load(self, bucket: str, key: str) -> None:
            if is_snapshot_key(key):
                held.set()
                assert release.wait(60)
            super().load(bucket, key)

    stop = threading.Event()
    runner = Runner(warehouse_dsn, stop, workers=1,
                    loader_factory=lambda m, s3, sqs: HoldingLoader(config, m.add, s3, sqs))
    runner.migrate()
    put(aws, snapshot_key("payment", 100, "0"), parquet_bytes(totesys_columns["payment"], [
        event("r", 100, snapshot_seq(n), payment(n)) for n in range(1, 4)]))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert held.wait(30), "the snapshot file was not taken"
        for n in range(4, 9):
            put(aws, object_key("payment", n, n), parquet_bytes(totesys_columns["payment"], [
                event("c", 200 + n, 1, payment(n))]))
        deadline = time.monotonic() + 30
        while count_rows(warehouse_dsn, "fact_payment") < 5:
            assert time.monotonic() < deadline, "the stream's files waited for the snapshot file"
            time.sleep(0.2)
        assert count_rows(warehouse_dsn, "fact_payment") == 5  # the snapshot's 3 are not in yet
        release.set()
        while count_rows(warehouse_dsn, "fact_payment") < 8:
            assert time.monotonic() < deadline + 30 and thread.is_alive(), "the snapshot file was not applied"
            time.sleep(0.2)
    finally:
        release.set()
        stop.set()
        thread.join(timeout=30)


def test_a_rejected_value_holds_back_its_own_row_not_the_files_other_rows(aws, runner, warehouse_dsn,
                                                                          totesys_columns):
    key = object_key("sales_order", 1, 5)
    rows = [event("c", 100 + i, 1, sales_order(i, agreed_payment_date="soon" if i == 3 else "2024-11-22"))
            for i in range(1, 6)]
    put(aws, key, parquet_bytes(totesys_columns["sales_order"], rows))

    poll_until(runner, lambda: queue_attribute(aws, "ApproximateNumberOfMessages") == 0
               and count_rows(warehouse_dsn, "fact_sales_order_current") == 4)
    s3 = aws.client("s3")
    target = settings()["prefixes"]["dead_letter_files"] + key
    dead = pq.read_table(io.BytesIO(s3.get_object(
        Bucket=settings()["buckets"]["dead_letter"], Key=target)["Body"].read()))
    assert dead.column("sales_order_id").to_pylist() == [3]
    assert dead.column("agreed_payment_date").to_pylist() == ["soon"]
    record = json.loads(s3.get_object(Bucket=settings()["buckets"]["dead_letter"],
                                      Key=f"{target}.error.json")["Body"].read())
    assert record["reason"].startswith("1 of 5 rows rejected, the others applied; the first: "
                                       "the warehouse rejected its values")

    # The fix the runbook gives: the corrected rows put back at the file's key.
    put(aws, key, parquet_bytes(totesys_columns["sales_order"], [
        event("c", 103, 1, sales_order(3, agreed_payment_date="2024-11-23"))]))
    poll_until(runner, lambda: count_rows(warehouse_dsn, "fact_sales_order_current") == 5)
    assert query(warehouse_dsn, "SELECT sales_order_id, agreed_payment_date::text FROM "
                                "fact_sales_order_current WHERE sales_order_id = 3") == [(3, "2024-11-23")]

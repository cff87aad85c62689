"""``totes-cdc status`` against a real source, warehouse and the AWS emulator."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import psycopg2
import pytest
from psycopg2 import sql

from tests.integration.dashboard import warehouse_rows
from totes_cdc import metric_names
from totes_cdc.settings import settings
from totes_ops import status
from totes_ops.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def slot(source_dsn, monkeypatch):
    name = f"status_{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(settings()["capture"], "slot", name)
    conn = psycopg2.connect(source_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
            cur.execute("CREATE TABLE churn (x text)")
            cur.execute("INSERT INTO churn SELECT repeat('x', 100) FROM generate_series(1, 1000)")
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        conn.close()


def _put_metric(aws, name, value, dimensions=None):
    aws.client("cloudwatch").put_metric_data(
        Namespace=settings()["metrics_namespace"],
        MetricData=[{"MetricName": name, "Value": value, "Unit": "Count",
                     "Dimensions": [{"Name": k, "Value": v} for k, v in (dimensions or {}).items()]}])


def test_every_stage_is_read_and_thresholds_fire(aws, source_dsn, slot, warehouse_dsn, tmp_path,
                                                 monkeypatch):
    s = settings()
    warehouse_rows.create(warehouse_dsn)
    warehouse_rows.sample(warehouse_dsn)
    for n, ms in enumerate((100, 200, 300, 400, 9000), start=10):
        warehouse_rows.add_sale(warehouse_dsn, n, latency=timedelta(milliseconds=ms))
    sqs = aws.client("sqs")
    for queue, messages in ((s["queues"]["processed_files"], 2), (s["queues"]["snapshot_files"], 1),
                            (s["queues"]["processed_files_dlq"], 1)):
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        sqs.purge_queue(QueueUrl=url)
        for i in range(messages):
            sqs.send_message(QueueUrl=url, MessageBody=f"file {i}")
    aws.client("s3").put_object(Bucket=s["buckets"]["dead_letter"],
                                Key=s["prefixes"]["dead_letter_files"] + "bad.parquet", Body=b"x")
    _put_metric(aws, "IteratorAgeMilliseconds", 75000)
    _put_metric(aws, "CaptureHeartbeat", 1, metric_names.dimensions("capture"))  # as capture emits it
    monkeypatch.setitem(s["alarms"], "slot_lag_bytes", 1000)
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "capture.json").write_text(json.dumps({"phase": "streaming", "snapshot": {
        "public.sales_order": {"done": True, "rows": 5, "total": 5}}}))
    # One loaded file's row of the latency waterfall (as warehouse_loader/latency.py writes it).
    conn = psycopg2.connect(warehouse_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO pipeline_latency VALUES ('f', 'sales_order', 1, 1, now(), now(), now(),"
                    " now(), 3, 4, 5, 6, 7, now(), 1, 2, 8)")
    conn.close()

    report = status.collect(source_dsn, warehouse_dsn, tmp_path)

    assert report.slot_lag_bytes > 1000
    assert report.stream_lag_ms == 75000
    assert report.files_waiting == 3  # both queues of files
    assert report.dead_letter_queue_depth == 1
    assert report.dead_lettered_objects == 1
    assert report.heartbeat_age_s is not None and not report.heartbeat_missing
    assert report.last_loaded_at is not None and report.last_event_age_s is not None
    assert 250 <= report.latency_ms["p50"] <= 350                  # snapshot rows are excluded
    assert report.latency_ms["p99"] > 5000
    assert report.unknown == {}
    assert report.stages_ms == {
        "commit_to_capture": {"p50": 1, "p99": 2}, "capture_to_kinesis": {"p50": 8, "p99": 8},
        "kinesis_to_processor": {"p50": 3, "p99": 3},
        "processor_to_file": {"p50": 4, "p99": 4}, "file_to_warehouse": {"p50": 5, "p99": 5},
        "end_to_end": {"p50": 6, "p99": 7}}
    assert report.capture == {"phase": "streaming", "behind_ms": None, "snapshot_rows": 5,
                              "snapshot_total": 5, "tables_done": 1, "tables": 1}
    fired = " | ".join(report.alerts)
    for expected in ("replication slot lag", "stream lag 75000 ms > 60000",
                     "end-to-end latency p99", "2 dead-lettered"):
        assert expected in fired
    assert "heartbeat" not in fired


def test_nothing_running_is_unknown_not_a_crash(aws, tmp_path, warehouse_server, source_dsn):
    empty = warehouse_server.create_database(f"wh_empty_{uuid.uuid4().hex[:8]}")
    report = status.collect(source_dsn, empty, tmp_path)
    assert report.slot_lag_bytes is None and "no replication slot" in report.unknown["slot_lag_bytes"]
    assert "fact_sales_order" in report.unknown["warehouse"]
    assert report.stream_lag_ms is None and "stream_lag_ms" in report.unknown
    assert report.heartbeat_missing and report.alerts == ["capture heartbeat missing"]


def test_the_local_runner_status_file_gives_stream_lag(aws, tmp_path):
    (tmp_path / "status").mkdir()
    path = tmp_path / "status" / "process.json"
    path.write_text(json.dumps({"shards": {}}))
    assert "no shard yet" in status.collect(None, None, tmp_path).unknown["stream_lag_ms"]
    path.write_text(json.dumps({"shards": {"a": {"millis_behind_latest": 1234},
                                           "b": {"millis_behind_latest": 20}}}))
    assert status.collect(None, None, tmp_path).stream_lag_ms == 1234


def test_cli_prints_text_and_json(aws, tmp_path, capsys, warehouse_dsn, monkeypatch):
    warehouse_rows.create(warehouse_dsn)
    monkeypatch.delenv("TOTES_CDC_SOURCE_DSN", raising=False)
    assert main(["status", "--warehouse-dsn", warehouse_dsn, "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "replication slot lag" in text and "unknown slot_lag_bytes: no source DSN" in text
    assert main(["status", "--json", "--warehouse-dsn", warehouse_dsn,
                 "--state-dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latency_ms"] is None and report["files_waiting"] is not None


def _scans(plan: dict) -> list[dict]:
    return ([plan] if "Relation Name" in plan else []) + [s for p in plan.get("Plans", ()) for s in _scans(p)]


def _rows_read(scan: dict) -> int:
    """Rows a scan node of an EXPLAIN ANALYZE read: returned and removed by its filter."""
    return (scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)) * scan["Actual Loops"]


def test_the_latency_reading_costs_a_bounded_number_of_rows_whatever_the_rate_history_or_load(
        warehouse_dsn):
    # The dashboard reads it every 5 s from a new connection: reading every row of the last five
    # minutes grew with the rate and walked every snapshot row of a resync, and with the history
    # the planner priced it above jit_above_cost.
    warehouse_rows.create(warehouse_dsn)
    conn = psycopg2.connect(warehouse_dsn)
    inserted = time.monotonic()  # no later than the insert's now()
    try:
        with conn, conn.cursor() as cur:
            # History a year old; 100,000 streamed rows loaded in the 100 s before the last 10 s,
            # each 200 ms after its commit; then a resync's 100,000 snapshot rows, read an hour ago.
            cur.execute(
                "INSERT INTO fact_sales_order (sales_order_id, source_op, source_lsn, source_seq, "
                "source_commit_ts, loaded_at) SELECT g, op, g, 1, commit_ts, t "
                "FROM generate_series(1, 300000) g, LATERAL (SELECT CASE "
                "WHEN g <= 100000 THEN now() - interval '1 year' + g * interval '1 second' "
                "WHEN g <= 200000 THEN now() - interval '10 second' - (200000 - g) * interval '1 ms' "
                "ELSE now() - (300000 - g) * interval '0.1 ms' END AS t) x, "
                "LATERAL (SELECT CASE WHEN g > 200000 THEN 'r' ELSE 'c' END AS op, "
                "CASE WHEN g > 200000 THEN now() - interval '1 hour' "
                "ELSE t - interval '0.2 second' END AS commit_ts) y")
            cur.execute("ANALYZE fact_sales_order")
            plans = {}
            for name, query in (("last load", status.LAST_LOAD_SQL), ("latency", status.LATENCY_SQL)):
                cur.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query), status.READING_PARAMS)
                plans[name] = cur.fetchone()[0][0]
    finally:
        conn.close()
    for name, branches in (("last load", 2), ("latency", 1)):
        plan = plans[name]
        scans = [s for s in _scans(plan["Plan"]) if s["Relation Name"] == "fact_sales_order"]
        assert all(s["Node Type"] != "Seq Scan" for s in scans), (name, scans)
        # Each branch reads at most LATENCY_ROWS, and the last load's max() one more each.
        assert sum(_rows_read(s) for s in scans) <= branches * (status.LATENCY_ROWS + 1), (name, scans)
        assert "JIT" not in plan, name
    last_loaded, last_age, latency = status.warehouse_reading(warehouse_dsn)
    # The age of the newest commit: the streamed rows', 10.2 s at the insert plus the time since,
    # seconds on busy cores (the history's commits are a year old, the snapshot rows' an hour).
    since_insert = time.monotonic() - inserted
    assert last_loaded is not None and last_age is not None
    assert 10.2 <= last_age <= 10.2 + since_insert, (last_age, since_insert)
    assert latency is not None and latency["p50"] == pytest.approx(200, abs=1)

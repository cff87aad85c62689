"""`totes-cdc source-check` against real servers and the emulator: the capture slot's lag and the
reconcile differences, put as the metrics the scheduled-check alarms watch."""

from __future__ import annotations

import re
from typing import Any

import boto3
import psycopg2
import pytest

from tests.conftest import query
from tests.integration.capture.conftest import seed_designs
from totes_cdc import metric_names
from totes_cdc.settings import settings
from totes_ops.cli import main
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration


def test_source_check_puts_slot_lag_and_reconcile_differences(
        aws: Any, totesys_dsn: str, warehouse_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    conn.close()
    slot = settings()["capture"]["slot"]
    query(totesys_dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        seed_designs(totesys_dsn, 3)  # written after the slot: lag > 0; not in the warehouse
        code = main(["source-check", "--source-dsn", totesys_dsn, "--warehouse-dsn", warehouse_dsn,
                     "--no-history"])
    finally:
        query(totesys_dsn, "SELECT pg_drop_replication_slot(%s)", (slot,))
    found = re.search(r"slot lag (\d+) bytes, (\d+) reconcile differences", capsys.readouterr().out)
    assert code == 1 and found and int(found.group(1)) > 0 and int(found.group(2)) >= 3
    dimensions = [{"Name": k, "Value": v} for k, v in metric_names.dimensions("source_check").items()]
    listed = boto3.client("cloudwatch").list_metrics(
        Namespace=settings()["metrics_namespace"], Dimensions=dimensions)["Metrics"]
    assert {m["MetricName"] for m in listed} == {"SlotLagBytes", "ReconcileDifferences"}

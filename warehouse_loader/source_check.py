"""``totes-cdc source-check``: the source's protection that does not depend on capture.

Run on a schedule (an EventBridge rule starts it as an ECS task, infra/modules/source_check), it
reads the capture slot's lag from the source's ``pg_replication_slots`` and reconciles the warehouse
with the source, and puts both as metrics (emitter ``source_check`` of settings.json ``metrics``),
which alarms watch. When capture is down its own slot-lag metric stops; this one does not.
"""

from __future__ import annotations

import argparse
from typing import Any

from totes_cdc.runtime import add_dsn_argument


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "source-check", help="publish the capture slot's lag and the reconcile differences as metrics",
        description="Read the capture slot's lag from pg_replication_slots, reconcile the warehouse "
                    "with the source, and put both to CloudWatch (exit 0 only when they match).")
    add_dsn_argument(parser, "source", required=False)
    add_dsn_argument(parser, "warehouse", required=False)
    parser.add_argument("--source-secret", metavar="NAME",
                        help="Secrets Manager secret of the source (RDS layout), instead of a DSN")
    parser.add_argument("--warehouse-secret", metavar="NAME",
                        help="Secrets Manager secret of the warehouse (RDS layout), instead of a DSN")
    parser.add_argument("--no-history", action="store_true",
                        help="compare current state only, not fact history against the raw zone")
    parser.set_defaults(func=run)


def _dsn(dsn: str | None, secret: str | None, role: str) -> str:
    from totes_cdc.db import dsn_from_secret_name
    from totes_cdc.errors import ConfigError

    if dsn:
        return dsn
    if secret:
        return dsn_from_secret_name(secret)
    raise ConfigError(f"source-check needs the {role} database: --{role}-dsn or --{role}-secret")


def check(source_dsn: str, warehouse_dsn: str, cloudwatch: Any, history: bool = True) -> tuple[int, int]:
    """(slot lag bytes, reconcile differences), both put to ``cloudwatch``."""
    from totes_cdc import metric_names
    from totes_cdc.db import slot_lag_bytes
    from totes_cdc.settings import settings
    from warehouse_loader.reconcile import RawZone, reconcile

    lag = slot_lag_bytes(source_dsn, settings()["capture"]["slot"]) or 0
    report = reconcile(source_dsn, warehouse_dsn, RawZone.from_settings() if history else None)
    differences = sum(table.differences for table in report.tables)
    units = metric_names.units("source_check")
    dimensions = [{"Name": k, "Value": v} for k, v in metric_names.dimensions("source_check").items()]
    cloudwatch.put_metric_data(Namespace=metric_names.namespace(), MetricData=[
        {"MetricName": name, "Value": float(value), "Unit": units[name], "Dimensions": dimensions}
        for name, value in (("SlotLagBytes", lag), ("ReconcileDifferences", differences))])
    return lag, differences


def run(args: argparse.Namespace) -> int:
    import boto3

    source = _dsn(args.source_dsn, args.source_secret, "source")
    warehouse = _dsn(args.warehouse_dsn, args.warehouse_secret, "warehouse")
    lag, differences = check(source, warehouse, boto3.client("cloudwatch"), history=not args.no_history)
    print(f"source-check: slot lag {lag} bytes, {differences} reconcile differences")
    return 0 if differences == 0 else 1

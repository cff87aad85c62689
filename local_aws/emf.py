"""Publish the CloudWatch embedded-metric-format documents the handler printed.

In AWS, CloudWatch Logs turns the handler's EMF log lines into metrics. The local runner does the
same with PutMetricData, so the handler has one way to emit metrics in both runtimes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, TextIO


def metric_data(document: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(namespace, MetricData) pairs of one EMF document: one series per metric and dimension set,
    as CloudWatch Logs makes them."""
    aws = document["_aws"]
    timestamp = dt.datetime.fromtimestamp(aws["Timestamp"] / 1000, tz=dt.UTC)
    out = []
    for directive in aws["CloudWatchMetrics"]:
        data = []
        for dimension_set in directive.get("Dimensions") or [[]]:
            dimensions = [{"Name": name, "Value": str(document[name])} for name in dimension_set]
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                data.append({"MetricName": metric["Name"], "Values": [float(v) for v in values],
                             "Unit": metric.get("Unit", "None"), "Timestamp": timestamp,
                             "Dimensions": dimensions})
        out.append((directive["Namespace"], data))
    return out


def publish(output: str, cloudwatch: Any, passthrough: TextIO | None = None) -> None:
    """Put the metrics of every EMF line of ``output``; other lines go on to ``passthrough``."""
    passthrough = passthrough or sys.stdout
    for line in output.splitlines():
        document = None
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
        if document is None:
            passthrough.write(line + "\n")
            continue
        for namespace, data in metric_data(document):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
    passthrough.flush()

"""The local runners' one metrics sink: what reaches CloudWatch from around the functions.

In AWS, CloudWatch Logs turns a handler's embedded-metric-format (EMF) log lines into metrics and
the event source mappings publish their own (IteratorAgeMilliseconds). Locally the runners add
both here, and the loader runner the metrics its handler adds; :meth:`MetricSink.flush` puts them
with PutMetricData, at most METRICS_PER_PUT data points a call.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from typing import Any, TextIO

# CloudWatch accepts at most this many metric data points per put_metric_data call.
METRICS_PER_PUT = 1000


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


class MetricSink:
    """Metrics added (from any thread) until :meth:`flush` puts them to ``cloudwatch``."""

    def __init__(self, cloudwatch: Any, namespace: str) -> None:
        self._cloudwatch = cloudwatch
        self._namespace = namespace
        self._lock = threading.Lock()
        self._data: dict[str, list[dict[str, Any]]] = {}

    def add(self, name: str, unit: str, value: float) -> None:
        self._add(self._namespace, [{"MetricName": name, "Unit": unit, "Value": float(value)}])

    def add_emf(self, output: str, passthrough: TextIO | None = None) -> None:
        """Add the metrics of every EMF line of ``output``; other lines go on to ``passthrough``."""
        passthrough = passthrough or sys.stdout
        for line in output.splitlines():
            if not (line.startswith("{") and '"_aws"' in line):
                passthrough.write(line + "\n")
                continue
            for namespace, data in metric_data(json.loads(line)):
                self._add(namespace, data)
        passthrough.flush()

    def flush(self) -> None:
        with self._lock:
            data, self._data = self._data, {}
        for namespace, points in data.items():
            for start in range(0, len(points), METRICS_PER_PUT):
                self._cloudwatch.put_metric_data(Namespace=namespace,
                                                 MetricData=points[start:start + METRICS_PER_PUT])

    def _add(self, namespace: str, points: list[dict[str, Any]]) -> None:
        with self._lock:
            self._data.setdefault(namespace, []).extend(points)

"""The local runners' one metrics sink: EMF lines as CloudWatch Logs reads them and added metrics,
put per namespace on flush (the chunking: tests/unit/warehouse_loader/test_runner_units.py)."""

from __future__ import annotations

import io
import json
from typing import Any

from local_aws.metrics import MetricSink


class CloudWatch:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_emf_lines_and_added_metrics_are_put_per_namespace_on_flush() -> None:
    emf = {"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{
        "Namespace": "Handler", "Dimensions": [["service"]],
        "Metrics": [{"Name": "EventsProcessed", "Unit": "Count"}]}]},
        "service": "p", "EventsProcessed": [3, 4]}
    cloudwatch, other = CloudWatch(), io.StringIO()
    sink = MetricSink(cloudwatch, "Runner")
    sink.add_emf(f"a log line\n{json.dumps(emf)}\n", other)
    sink.add("IteratorAgeMilliseconds", "Milliseconds", 12)
    assert cloudwatch.calls == [] and other.getvalue() == "a log line\n"
    sink.flush()
    sink.flush()
    assert [(c["Namespace"], [d["MetricName"] for d in c["MetricData"]]) for c in cloudwatch.calls] == [
        ("Handler", ["EventsProcessed"]), ("Runner", ["IteratorAgeMilliseconds"])]
    assert cloudwatch.calls[0]["MetricData"][0]["Values"] == [3.0, 4.0]
    assert cloudwatch.calls[0]["MetricData"][0]["Dimensions"] == [{"Name": "service", "Value": "p"}]


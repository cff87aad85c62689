"""Every alarm and dashboard widget on the pipeline's own metrics watches a series the code emits,
and each alarm breaches when its condition is driven through the code.

The alarms and the dashboard are taken from a Terraform plan of the monitoring module (evaluated
values, not HCL text). The metrics come from the code that emits them in AWS, run against the
emulator and a real warehouse: the stream-processor and loader Lambda handlers (their embedded
metric format output, turned into series as CloudWatch Logs does) and capture's publisher (its
PutMetricData calls). A CloudWatch series is namespace + metric name + the exact set of dimensions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import psycopg2
import pytest

from capture.config import CaptureConfig
from capture.metrics import MetricsPublisher
from capture.service import CaptureService
from stream_processors import handler as stream_handler
from tests.conftest import query
from tests.events import COLUMNS as EVENT_COLUMNS
from tests.events import Context, aggregated, lambda_event, sales_order_values, sales_orders
from tests.infra import terraform
from tests.integration.capture.conftest import seed_designs
from tests.integration.warehouse_loader.files import event, object_key, parquet_bytes
from totes_cdc import metric_names, stages
from totes_cdc.settings import SETTINGS_PATH, settings
from warehouse_loader import handler as loader_handler
from warehouse_loader import source_check
from warehouse_loader.migrate import migrate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not terraform.available(), reason="terraform is not installed"),
]

Series = tuple[str, str, frozenset[tuple[str, str]]]  # namespace, metric name, dimensions
Point = tuple[Series, str, list[float]]  # series, unit, values


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> terraform.Monitoring:
    return terraform.plan_monitoring(tmp_path_factory.mktemp("monitoring"), SETTINGS_PATH)


def emf_points(output: str) -> list[Point]:
    """The series of every EMF line of ``output``: one per metric and dimension set."""
    points = []
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"] or [[]]:
                dimensions = frozenset((name, str(document[name])) for name in dimension_set)
                for metric in directive["Metrics"]:
                    value = document[metric["Name"]]
                    values = [float(v) for v in (value if isinstance(value, list) else [value])]
                    points.append(((directive["Namespace"], metric["Name"], dimensions),
                                   metric.get("Unit", "None"), values))
    return points


class RecordingCloudWatch:
    """The emulator's CloudWatch client, keeping every PutMetricData call's series."""

    def __init__(self) -> None:
        self.client = boto3.client("cloudwatch")
        self.points: list[Point] = []

    def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
        self.client.put_metric_data(Namespace=Namespace, MetricData=MetricData)
        for datum in MetricData:
            dimensions = frozenset((d["Name"], d["Value"]) for d in datum.get("Dimensions", []))
            self.points.append(((Namespace, datum["MetricName"], dimensions), datum["Unit"],
                                [float(datum["Value"])]))


class Pipeline:
    """Runs the code that emits each metric, one call per alarm period; collects what it emitted."""

    def __init__(self, capsys: pytest.CaptureFixture[str], warehouse_dsn: str, source_dsn: str,
                 tmp_path: Path) -> None:
        self.capsys = capsys
        self.cloudwatch = RecordingCloudWatch()
        self.s3 = boto3.client("s3")
        self.capture = CaptureService(
            CaptureConfig.from_settings("", tmp_path), sink=None, dead_letter=None,  # type: ignore[arg-type]
            store=None, publisher=MetricsPublisher(tmp_path / "status.json", self.cloudwatch))  # type: ignore[arg-type]
        self.warehouse_dsn = warehouse_dsn
        self.source_dsn = source_dsn
        self.sequence = 100
        self.lsn = 5000

    def _emf(self, call: Callable[[], Any]) -> list[Point]:
        self.capsys.readouterr()
        call()
        return emf_points(self.capsys.readouterr().out)

    def stream_batch(self, poison: bool) -> list[Point]:
        """One stream-processor invocation; ``poison`` adds a record that is not an event."""
        records = aggregated(sales_orders(3, lsn=self.lsn), per_record=3)
        if poison:
            records.append(("public.sales_order/9", b"not an event"))
        event_ = lambda_event(records, first_sequence=self.sequence)
        self.sequence += 10
        self.lsn += 10
        return self._emf(lambda: stream_handler.handler(event_, Context()))

    def load(self, commit_ts: dt.datetime | None) -> list[Point]:
        """One loader invocation: a sales_order file committed at ``commit_ts``, or (None) a
        notification of an object that does not exist, which is dead-lettered."""
        bucket = settings()["buckets"]["processed"]
        self.lsn += 10
        key = object_key("sales_order", self.lsn, self.lsn)
        if commit_ts is not None:
            row = event("c", self.lsn, 1, sales_order_values(self.lsn), commit_ts=commit_ts)
            at = commit_ts.timestamp()  # every stage at the commit: the stage metrics are emitted
            times = {"capture_read": at, "kinesis_accepted": at, "processor_read": at, "file_written": at}
            self.s3.put_object(Bucket=bucket, Key=key, Body=parquet_bytes(
                EVENT_COLUMNS["sales_order"], [row], {stages.METADATA_KEY: json.dumps(times).encode()}))
        body = json.dumps({"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})
        sqs_event = {"Records": [{"messageId": f"m{self.lsn}", "receiptHandle": "r", "body": body,
                                  "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"}]}
        response: dict[str, Any] = {}
        points = self._emf(lambda: response.update(loader_handler.handler(sqs_event, Context())))
        assert response == {"batchItemFailures": []}
        return points

    def capture_round(self, slot_lag: int, heartbeat: bool) -> list[Point]:
        """One metrics interval of capture: the slot ``slot_lag`` bytes behind, a heartbeat or not."""
        src = SimpleNamespace(slot_lag_bytes=lambda slot: slot_lag, heartbeat=lambda: None)
        producer = SimpleNamespace(stats=SimpleNamespace(events=10, records=2, calls=1, retries=0,
                                                         dead_lettered=0))
        if heartbeat:
            self.capture.heartbeat(src)  # type: ignore[arg-type]
        start = len(self.cloudwatch.points)
        self.capture.publish_metrics(producer, src, force=True)  # type: ignore[arg-type]
        return self.cloudwatch.points[start:]


    def source_check(self, differ: bool) -> list[Point]:
        """One scheduled source check; ``differ``: a source row the warehouse does not have."""
        if differ:
            seed_designs(self.source_dsn, 1)
        start = len(self.cloudwatch.points)
        source_check.check(self.source_dsn, self.warehouse_dsn, self.cloudwatch, history=False)
        return self.cloudwatch.points[start:]


@pytest.fixture
def pipeline(aws: Any, warehouse_dsn: str, totesys_dsn: str, capsys: pytest.CaptureFixture[str],
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    conn.close()
    # The capture slot, whose lag the source check reads.
    slot = settings()["capture"]["slot"]
    query(totesys_dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    monkeypatch.setenv(loader_handler.DSN_ENV, warehouse_dsn)
    # A service name in the environment (as Lambda functions often have) must not move the series.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "some-function")
    stream_handler._s3.cache_clear()
    loader_handler._lambda_loader.cache_clear()
    yield Pipeline(capsys, warehouse_dsn, totesys_dsn, tmp_path)
    query(totesys_dsn, "SELECT pg_drop_replication_slot(%s)", (slot,))
    loader_handler._lambda_loader().close()
    loader_handler._lambda_loader.cache_clear()
    stream_handler._s3.cache_clear()


def _series(alarm: dict[str, Any]) -> Series:
    return (alarm["namespace"], alarm["metric_name"], frozenset((alarm["dimensions"] or {}).items()))


def _widget_series(entry: list[Any]) -> Series:
    """[namespace, metric, dim, value, ..., {options}] -> the series it plots."""
    fields = [item for item in entry if not isinstance(item, dict)]
    pairs = zip(fields[2::2], fields[3::2], strict=True)
    return fields[0], fields[1], frozenset(pairs)


def own_alarms(monitoring: terraform.Monitoring) -> dict[str, dict[str, Any]]:
    ns = settings()["metrics_namespace"]
    return {name: alarm for name, alarm in monitoring.alarms.items() if alarm["namespace"] == ns}


def emitted_once(pipeline: Pipeline) -> list[Point]:
    """Every metric of every emitter, once."""
    return [*pipeline.stream_batch(poison=True), *pipeline.load(dt.datetime.now(dt.UTC)),
            *pipeline.load(None), *pipeline.capture_round(slot_lag=10, heartbeat=True),
            *pipeline.source_check(differ=False)]


def unwatched(monitoring: terraform.Monitoring, emitted: set[Series]) -> list[str]:
    """The alarms and dashboard entries on the pipeline's own metrics that watch no emitted series."""
    ns = settings()["metrics_namespace"]
    problems = [f"alarm {name}: {_series(alarm)}" for name, alarm in own_alarms(monitoring).items()
                if _series(alarm) not in emitted]
    entries = [entry for widget in monitoring.dashboard["widgets"]
               for entry in widget["properties"]["metrics"] if entry[0] == ns]
    assert len(entries) >= 12
    return problems + [f"widget {entry}" for entry in entries if _widget_series(entry) not in emitted]


def test_every_alarm_and_widget_on_own_metrics_watches_an_emitted_series(
        pipeline: Pipeline, monitoring: terraform.Monitoring) -> None:
    points = emitted_once(pipeline)
    emitted = {series for series, _, _ in points}
    assert {"slot-lag", "capture-heartbeat-missing", "end-to-end-latency-p99", "records-dead-lettered",
            "files-dead-lettered", "source-check-slot-lag", "reconcile-differences"} <= set(
        own_alarms(monitoring))
    assert unwatched(monitoring, emitted) == []

    # What is emitted is what settings.json defines: names, units and the emitter's dimension.
    ns = settings()["metrics_namespace"]
    for emitter in settings()["metrics"]["emitters"]:
        dimensions = frozenset(metric_names.dimensions(emitter).items())
        for name, unit in metric_names.units(emitter).items():
            assert (ns, name, dimensions) in emitted, f"{emitter} did not emit {name}"
            assert {u for s, u, _ in points if s == (ns, name, dimensions)} == {unit}, name
    assert len(emitted) == sum(len(metric_names.units(e)) for e in settings()["metrics"]["emitters"])


def test_an_alarm_whose_dimension_differs_from_the_code_is_caught(
        pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Terraform planned with the loader's service dimension changed, the code left as it is."""
    changed = json.loads(SETTINGS_PATH.read_text(encoding="utf-8"))
    changed["metrics"]["emitters"]["loader"]["service"] = "another-service"
    workdir = tmp_path_factory.mktemp("changed")
    (workdir / "settings.json").write_text(json.dumps(changed), encoding="utf-8")
    monitoring = terraform.plan_monitoring(workdir, workdir / "settings.json")
    problems = unwatched(monitoring, {series for series, _, _ in emitted_once(pipeline)})
    assert sorted(p.split(":")[0] for p in problems if p.startswith("alarm")) == [
        "alarm end-to-end-latency-p99", "alarm files-dead-lettered"]
    assert len([p for p in problems if p.startswith("widget")]) == 5  # FilesLoaded ... latency p50/p99


# --- breach: the alarm's statistic and threshold over what the code emitted ------------------------

def statistic(alarm: dict[str, Any], values: list[float]) -> float:
    name = alarm["statistic"] or alarm["extended_statistic"]
    if name == "Sum":
        return sum(values)
    if name == "Maximum":
        return max(values)
    if name == "Minimum":
        return min(values)
    if name == "Average":
        return sum(values) / len(values)
    assert name.startswith("p"), name
    ordered = sorted(values)  # nearest rank
    return ordered[max(0, math.ceil(float(name[1:]) / 100 * len(ordered)) - 1)]


COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def state(alarm: dict[str, Any], periods: list[list[Point]]) -> str:
    """ALARM when each of the last evaluation_periods periods breaches (datapoints_to_alarm
    unset: all of them), as CloudWatch evaluates a metric alarm; missing data as configured."""
    assert alarm["datapoints_to_alarm"] in (None, alarm["evaluation_periods"])
    evaluated = periods[-alarm["evaluation_periods"]:]
    assert len(evaluated) == alarm["evaluation_periods"]
    breaches = []
    for points in evaluated:
        values = [v for series, _, vs in points if series == _series(alarm) for v in vs]
        if not values:
            breaches.append(alarm["treat_missing_data"] == "breaching")
        else:
            breaches.append(COMPARE[alarm["comparison_operator"]](statistic(alarm, values),
                                                                   alarm["threshold"]))
    return "ALARM" if all(breaches) else "OK"


def test_each_own_metric_alarm_breaches_when_its_condition_is_driven_through_the_code(
        pipeline: Pipeline, monitoring: terraform.Monitoring) -> None:
    alarms = own_alarms(monitoring)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    lag = settings()["alarms"]["slot_lag_bytes"]
    # name -> (one period of healthy traffic, one period of the condition the alarm is for)
    drive: dict[str, tuple[Callable[[], list[Point]], Callable[[], list[Point]]]] = {
        # First: the warehouse matches the (empty) source until the loader runs below.
        "reconcile-differences": (lambda: pipeline.source_check(differ=False),
                                  lambda: pipeline.source_check(differ=True)),
        # The lag over the threshold is shown on capture's slot-lag alarm below; what this alarm
        # adds is that a check that did not run breaches.
        "source-check-slot-lag": (lambda: pipeline.source_check(differ=False), list),
        "records-dead-lettered": (lambda: pipeline.stream_batch(poison=False),
                                  lambda: pipeline.stream_batch(poison=True)),
        "files-dead-lettered": (lambda: pipeline.load(dt.datetime.now(dt.UTC)),
                                lambda: pipeline.load(None)),
        "end-to-end-latency-p99": (lambda: pipeline.load(dt.datetime.now(dt.UTC)),
                                   lambda: pipeline.load(old)),
        "slot-lag": (lambda: pipeline.capture_round(slot_lag=0, heartbeat=True),
                     lambda: pipeline.capture_round(slot_lag=lag + 1, heartbeat=True)),
        "capture-heartbeat-missing": (lambda: pipeline.capture_round(slot_lag=0, heartbeat=True),
                                      lambda: pipeline.capture_round(slot_lag=0, heartbeat=False)),
    }
    assert set(drive) == set(alarms), "an alarm on the pipeline's own metrics with no breach test"
    for name, (healthy, breach) in drive.items():
        alarm = alarms[name]
        n = alarm["evaluation_periods"]
        assert state(alarm, [healthy() for _ in range(n)]) == "OK", name
        assert state(alarm, [breach() for _ in range(n)]) == "ALARM", name

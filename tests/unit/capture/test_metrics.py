"""capture.metrics: copy progress in the status file, the progress metrics and the log lines."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from capture.metrics import MetricsPublisher
from capture.progress import ProgressTracker


class Recording:
    def __init__(self) -> None:
        self.puts: list[dict[str, float]] = []

    def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
        self.puts.append({d["MetricName"]: d["Value"] for d in MetricData})


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_status_file_and_metrics_carry_each_tables_progress(tmp_path: Path) -> None:
    clock = Clock()
    cloudwatch = Recording()
    publisher = MetricsPublisher(tmp_path / "capture.json", cloudwatch, ProgressTracker(clock))
    publisher.progress.start("public.a", 1000)
    publisher.progress.start("public.b", 50)
    clock.now += 2
    publisher.progress.advance("public.a", 400)
    publisher.progress.advance("public.b", 50)
    publisher.progress.finish("public.b")
    publisher.publish([("SlotLagBytes", 0.0, "Bytes")], {"phase": "snapshot"})

    status = json.loads((tmp_path / "capture.json").read_text())
    assert status["phase"] == "snapshot"
    assert status["copies"] == [
        {"table": "public.a", "rows_done": 400, "estimated_total": 1000, "rate": 200.0,
         "eta_seconds": 3, "finished": False},
        {"table": "public.b", "rows_done": 50, "estimated_total": 50, "rate": 25.0,
         "eta_seconds": 0, "finished": True}]
    assert cloudwatch.puts == [{"SlotLagBytes": 0.0, "SnapshotRowsRemaining": 600.0,
                                "SnapshotRowsCopied": 450.0}]


def test_rows_copied_are_put_once_whoever_puts_them(tmp_path: Path) -> None:
    cloudwatch = Recording()
    publisher = MetricsPublisher(tmp_path / "capture.json", cloudwatch)
    publisher.progress.start("t", 100)
    publisher.progress.advance("t", 30)
    publisher.report()
    publisher.progress.advance("t", 5)
    publisher.publish([], {})
    publisher.report()
    assert [put["SnapshotRowsCopied"] for put in cloudwatch.puts] == [30.0, 5.0, 0.0]
    assert [put["SnapshotRowsRemaining"] for put in cloudwatch.puts] == [70.0, 65.0, 65.0]


def test_reporting_logs_each_table_every_interval_and_a_finished_one_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    publisher = MetricsPublisher(tmp_path / "capture.json", Recording())
    caplog.set_level(logging.INFO, logger="capture.metrics")

    def big() -> list[str]:
        return [line for line in (r.getMessage() for r in caplog.records)
                if line.startswith("copy of public.big 1,000/1,000,000 rows (0%), ")]

    with publisher.reporting(0.05):
        publisher.progress.start("public.big", 1_000_000)
        publisher.progress.start("public.small", 10)
        publisher.progress.advance("public.small", 10)
        publisher.progress.finish("public.small")
        publisher.progress.advance("public.big", 1000)
        # two reports of the interval's thread (waited for: a loaded machine may hold it back)
        deadline = time.monotonic() + 30
        while len(big()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert json.loads((tmp_path / "capture.json").read_text())["copies"][0]["rows_done"] == 1000
    lines = [r.getMessage() for r in caplog.records]
    assert len(big()) >= 3  # and the one as the block ends
    assert "ETA" in big()[0]
    [small] = [line for line in lines if line.startswith("copy of public.small")]
    assert small.startswith("copy of public.small 10 rows, done")


def test_capture_heartbeats_while_its_snapshot_copies_and_a_resync_never_does(tmp_path: Path) -> None:
    """The heartbeat alarm reads 'capture is down' from no heartbeat: capture's own snapshot puts
    one with each progress report; a resync (another process) does not speak for capture."""
    cloudwatch = Recording()
    publisher = MetricsPublisher(tmp_path / "capture.json", cloudwatch)
    with publisher.reporting(60, heartbeat=True):
        publisher.progress.start("public.t", 100)
    with publisher.reporting(60):
        publisher.progress.start("public.u", 100)
    assert [put.get("CaptureHeartbeat") for put in cloudwatch.puts] == [1.0, None]


def test_a_failing_cloudwatch_does_not_stop_the_progress_report(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Failing:
        def put_metric_data(self, **_: Any) -> None:
            import botocore.exceptions
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")

    publisher = MetricsPublisher(tmp_path / "capture.json", Failing())
    publisher.progress.start("t", 10)
    publisher.report()
    assert "could not publish capture metrics" in caplog.text
    assert json.loads((tmp_path / "capture.json").read_text())["copies"][0]["table"] == "t"

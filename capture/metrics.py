"""Capture's metrics: CloudWatch (names from settings, totes_cdc.metric_names) and the local status file.

Publishing is best effort: a failure is logged and capture goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from capture.progress import ProgressTracker, TableProgress
from totes_cdc import metric_names
from totes_cdc.jsonfile import write_atomically

log = logging.getLogger(__name__)

Metric = tuple[str, float, str]  # name, value, CloudWatch unit


class MetricsPublisher:
    """Writes capture's status file and puts its metrics; :attr:`progress` is where the readers of
    a snapshot or resync count their rows, shown in both and in log lines (:meth:`reporting`)."""

    def __init__(self, status_path: Path, client: Any = None,
                 progress: ProgressTracker | None = None) -> None:
        self.status_path = status_path
        self.progress = progress or ProgressTracker()
        self._client = client
        self._status: dict[str, Any] = {}
        self._namespace = metric_names.namespace()
        # The series the alarms watch (settings metrics, totes_cdc.metric_names).
        self._dimensions = [{"Name": name, "Value": value}
                            for name, value in metric_names.dimensions("capture").items()]
        # The status file and the copied-rows count are shared with the reporting thread.
        self._lock = threading.Lock()
        self._copied = 0
        self._logged_done: set[tuple[str, int]] = set()
        self._heartbeat = False  # put a heartbeat with the progress metrics (see reporting)

    def publish(self, metrics: Sequence[Metric], status: dict[str, Any]) -> None:
        with self._lock:
            copies = self.progress.snapshot()
            self._status = status
            self._write_status(copies)
            progress = self._progress_metrics(copies)
        self._put([*metrics, *progress])

    def mark(self, phase: str) -> None:
        """Rewrite the status file with ``phase`` and the time now, in phases that publish nothing
        (starting, reconnecting): the status file is the liveness the container health check reads."""
        with self._lock:
            self._status = {**self._status, "phase": phase}
            self._write_status(self.progress.snapshot())

    @contextmanager
    def reporting(self, seconds: float, heartbeat: bool = False) -> Iterator[None]:
        """While the block copies tables, every ``seconds``: a log line per table being copied
        (rows/total, rate, ETA), the status file rewritten and the progress metrics put, with a
        ``CaptureHeartbeat`` when ``heartbeat`` (capture's own snapshot: it is alive and reads the
        source, though it streams nothing yet; a resync, another process, must not speak for it).

        From a thread of its own, so that a copy that stalls shows its rate falling instead of
        going quiet; once more when the block ends.
        """
        self._heartbeat = heartbeat
        stop = threading.Event()
        thread = threading.Thread(target=self._report_until, args=(stop, seconds),
                                  name="copy-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.report()
            self._heartbeat = False

    def report(self) -> None:
        """Log, write and put the copies' progress now."""
        with self._lock:
            copies = self.progress.snapshot()
            self._write_status(copies)
            progress = self._progress_metrics(copies)
            for copy in copies:
                # A finished table is logged once (per copy, told apart by its row count).
                if copy.finished and (copy.table, copy.rows_done) in self._logged_done:
                    continue
                if copy.finished:
                    self._logged_done.add((copy.table, copy.rows_done))
                log.info("copy of %s", copy.describe())
        self._put(progress)

    def _report_until(self, stop: threading.Event, seconds: float) -> None:
        while not stop.wait(seconds):
            self.report()

    def _progress_metrics(self, copies: list[TableProgress]) -> list[Metric]:
        """Rows still to copy (by the estimate) and rows copied since the last put."""
        remaining = sum(max((c.estimated_total or 0) - c.rows_done, 0)
                        for c in copies if not c.finished)
        copied, self._copied = self.progress.copied - self._copied, self.progress.copied
        return [("SnapshotRowsRemaining", float(remaining), "Count"),
                ("SnapshotRowsCopied", float(copied), "Count"),
                *([("CaptureHeartbeat", 1.0, "Count")] if self._heartbeat else [])]

    def _put(self, metrics: Sequence[Metric]) -> None:
        try:
            if self._client is None:
                self._client = boto3.client("cloudwatch")
            self._client.put_metric_data(Namespace=self._namespace, MetricData=[
                {"MetricName": name, "Value": value, "Unit": unit, "Dimensions": self._dimensions}
                for name, value, unit in metrics])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.warning("could not publish capture metrics to CloudWatch: %s", exc)

    def _write_status(self, copies: list[TableProgress]) -> None:
        # updated_at: the health check's liveness; pid: it tells this process's file from one a
        # previous process left; copies: what `totes-cdc status` and the dashboard show.
        status = {**self._status, "updated_at": dt.datetime.now(dt.UTC).isoformat(),
                  "pid": os.getpid(), "copies": [c.as_dict() for c in copies]}
        try:
            write_atomically(self.status_path, status)
        except OSError as exc:
            log.warning("could not write %s: %s", self.status_path, exc)

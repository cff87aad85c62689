"""Capture's metrics: CloudWatch (namespace from settings) and the local status file.

Publishing is best effort: a failure is logged and capture goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from totes_cdc import metric_names
from totes_cdc.jsonfile import write_atomically
from totes_cdc.settings import settings

log = logging.getLogger(__name__)

Metric = tuple[str, float, str]  # name, value, CloudWatch unit


class MetricsPublisher:
    def __init__(self, status_path: Path, client: Any = None) -> None:
        self.status_path = status_path
        self._client = client
        self._status: dict[str, Any] = {}
        self._namespace = settings()["metrics_namespace"]
        # The series the alarms watch (settings metrics, totes_cdc.metric_names).
        self._dimensions = [{"Name": name, "Value": value}
                            for name, value in metric_names.dimensions("capture").items()]

    def publish(self, metrics: Sequence[Metric], status: dict[str, Any]) -> None:
        self._status = status
        self._write_status(status)
        try:
            if self._client is None:
                self._client = boto3.client("cloudwatch")
            self._client.put_metric_data(Namespace=self._namespace, MetricData=[
                {"MetricName": name, "Value": value, "Unit": unit, "Dimensions": self._dimensions}
                for name, value, unit in metrics])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.warning("could not publish capture metrics to CloudWatch: %s", exc)

    def mark(self, phase: str) -> None:
        """Rewrite the status file with ``phase`` and the time now, in phases that publish nothing
        (starting, reconnecting): the status file is the liveness the container health check reads."""
        self._status = {**self._status, "phase": phase,
                        "updated_at": dt.datetime.now(dt.UTC).isoformat()}
        self._write_status(self._status)

    def _write_status(self, status: dict[str, Any]) -> None:
        try:
            # pid: the health check tells this process's file from one a previous process left.
            write_atomically(self.status_path, {**status, "pid": os.getpid()})
        except OSError as exc:
            log.warning("could not write %s: %s", self.status_path, exc)

"""Run capture in a process of its own with configuration overrides (JSON in argv[1]), until SIGTERM,
or with ``"resync": [tables]`` a resync of those tables, until it ends: what the kill -9 tests
kill. The settings capture's CLI does not expose (snapshot ranges and workers) are what those tests
vary."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from capture.config import CaptureConfig
from capture.kinesis import KinesisSink, S3DeadLetter
from capture.metrics import MetricsPublisher
from capture.service import CaptureService, resync
from capture.state import LocalStateStore
from totes_cdc.settings import settings


def main() -> None:
    overrides = json.loads(sys.argv[1])
    state_dir = Path(overrides.pop("state_dir"))
    tables = overrides.pop("resync", None)
    config = CaptureConfig.from_settings(os.environ["TOTES_CDC_SOURCE_DSN"], state_dir, **overrides)
    if tables is not None:
        resync(config, tables, MetricsPublisher(state_dir / "status" / "resync.json"))
        return
    cfg = settings()
    service = CaptureService(
        config, KinesisSink(config.stream),
        S3DeadLetter(cfg["buckets"]["dead_letter"], cfg["prefixes"]["dead_letter_records"]),
        LocalStateStore(state_dir, config.slot), MetricsPublisher(state_dir / "status" / "capture.json"))
    signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
    service.run()


if __name__ == "__main__":
    main()

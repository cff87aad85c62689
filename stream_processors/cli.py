"""``totes-cdc process``: the local event source mapping, calling the stream-processor handler."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from totes_cdc.cli import add_state_dir_argument


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "process", help="poll the change stream and run the stream-processor handler on each batch",
        description="Does locally what the Lambda event source mapping does in AWS (settings.json "
                    "stream_processor_mapping), until SIGTERM/SIGINT. Checkpoints in "
                    "<state-dir>/checkpoints, status in <state-dir>/status/process.json.")
    add_state_dir_argument(parser)
    parser.set_defaults(func=process)


def process(args: argparse.Namespace) -> int:
    import boto3

    from totes_cdc.settings import settings

    from .config import MappingConfig
    from .handler import handler
    from .runner import Runner

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    config = MappingConfig.from_settings()
    runner = Runner(config, Path(args.state_dir), handler, kinesis=boto3.client("kinesis"),
                    sqs=boto3.client("sqs"), cloudwatch=boto3.client("cloudwatch"),
                    namespace=settings()["metrics_namespace"])
    runner.run(stop)
    runner.write_status(force=True)
    return 0

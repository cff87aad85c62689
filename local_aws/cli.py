"""``totes-cdc process`` and ``load``: the local event source mappings, calling the Lambda handlers."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from totes_cdc.runtime import add_dsn_argument, add_state_dir_argument


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "process", help="poll the change stream and run the stream-processor handler on each batch",
        description="Does locally what the Lambda event source mapping does in AWS (settings.json "
                    "stream_processor_mapping), until SIGTERM/SIGINT. Checkpoints in "
                    "<state-dir>/checkpoints, status in <state-dir>/status/process.json.")
    add_state_dir_argument(parser)
    parser.set_defaults(func=process)

    load = subparsers.add_parser(
        "load", help="apply processed files to the warehouse (polls the SQS queue)",
        description="Poll the processed-files queue like the Lambda SQS event source mapping and "
                    "apply each file with the loader handler; runs until SIGTERM/SIGINT. Migrates "
                    "the warehouse first.")
    add_dsn_argument(load, "warehouse")
    load.set_defaults(func=_load)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def process(args: argparse.Namespace) -> int:
    import boto3

    from local_aws.kinesis_runner import Runner
    from stream_processors.config import MappingConfig
    from stream_processors.handler import handler
    from totes_cdc import metric_names

    stop = _stop_on_signals()
    config = MappingConfig.from_settings()
    runner = Runner(config, Path(args.state_dir), handler, kinesis=boto3.client("kinesis"),
                    sqs=boto3.client("sqs"), cloudwatch=boto3.client("cloudwatch"),
                    namespace=metric_names.namespace())
    runner.run(stop)
    runner.write_status(force=True)
    return 0


def _load(args: argparse.Namespace) -> int:
    from local_aws.sqs_runner import Runner

    Runner(args.warehouse_dsn, _stop_on_signals()).run()
    return 0

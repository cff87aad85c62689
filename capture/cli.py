"""``totes-cdc capture``: run the capture service until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from capture.config import STATE_STORES
from totes_cdc import db
from totes_cdc.errors import ConfigError, TerminalError
from totes_cdc.runtime import add_dsn_argument, add_state_dir_argument
from totes_cdc.settings import settings


def register(subparsers: Any) -> None:
    cfg = settings()
    parser = subparsers.add_parser(
        "capture", help="stream every row change of the source into Kinesis",
        description="Read the source's logical replication slot (taking a consistent initial snapshot "
                    "first) and put every change, as a change event, on the Kinesis stream.")
    _add_source_arguments(parser)
    parser.add_argument("--stream", default=cfg["stream"]["name"], help="Kinesis stream name")
    parser.add_argument("--tables", nargs="+", metavar="TABLE",
                        help="tables to capture, table or schema.table (default: the 11 totesys tables)")
    parser.add_argument("--slot", default=cfg["capture"]["slot"], help="replication slot name")
    parser.add_argument("--publication", default=cfg["capture"]["publication"], help="publication name")
    parser.add_argument("--state-store", choices=STATE_STORES,
                        default=os.environ.get("TOTES_CDC_STATE_STORE", "local"),
                        help="where snapshot progress is kept: the state dir, or the raw bucket in S3 "
                             "(default: $TOTES_CDC_STATE_STORE or local)")
    add_state_dir_argument(parser)
    parser.add_argument("--heartbeat-seconds", type=float, help="seconds between heartbeats")
    parser.add_argument("--max-batch-delay-ms", type=int, help="longest wait before a put to the stream")
    parser.set_defaults(func=run)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    add_dsn_argument(parser, "source", required=False)
    parser.add_argument("--source-secret", default=os.environ.get("TOTES_CDC_SOURCE_SECRET"),
                        metavar="NAME", help="Secrets Manager secret holding the source's host, port, "
                        "username, password, dbname (and sslmode), used when no DSN is given "
                        "(default: $TOTES_CDC_SOURCE_SECRET)")


def register_resync(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "resync", help="read tables again into the lake while capture streams",
        description="Read the given tables (default: every captured table) in a fresh exported "
                    "snapshot straight into the lake, with a completion marker per table after which "
                    "the loader tombstones rows the read did not see. Runs beside the streaming "
                    "capture; a resync that stops is simply run again.")
    _add_source_arguments(parser)
    parser.add_argument("--table", nargs="+", metavar="TABLE", dest="tables",
                        help="tables to read again, table or schema.table (default: every captured table)")
    parser.add_argument("--slot", default=settings()["capture"]["slot"],
                        help="the capture's slot: the resync's temporary slot is named after it")
    add_state_dir_argument(parser)
    parser.set_defaults(func=run_resync)


def _source_dsn(args: argparse.Namespace) -> str:
    dsn = args.source_dsn or (db.dsn_from_secret_name(args.source_secret) if args.source_secret else None)
    if not dsn:
        raise ConfigError("no source database given: set TOTES_CDC_SOURCE_DSN (or --source-dsn), "
                          "or --source-secret in AWS")
    return str(dsn)


def run_resync(args: argparse.Namespace) -> int:
    """Exit 0 once every table and its marker is in the lake; 1 when stopped or a read failed."""
    from capture.config import CaptureConfig
    from capture.errors import ResyncFailed, Stopped
    from capture.metrics import MetricsPublisher
    from capture.service import resync
    from capture.source import format_lsn

    state_dir = Path(args.state_dir)
    config = CaptureConfig.from_settings(_source_dsn(args), state_dir, slot=args.slot,
                                         tables=tuple(args.tables) if args.tables else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        state = resync(config, config.tables, MetricsPublisher(state_dir / "status" / "resync.json"),
                       stop=stop)
    except Stopped:
        print("totes-cdc: resync stopped before it completed: run it again", file=sys.stderr)
        return 1
    except ResyncFailed as exc:
        print(f"totes-cdc: resync failed: {exc}: run it again", file=sys.stderr)
        return 1
    except TerminalError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"totes-cdc: resync failed: {exc}", file=sys.stderr)
        return 1
    for table, progress in state.tables.items():
        print(f"{table}: {progress.rows} rows read at {format_lsn(state.snapshot_lsn)}, "
              f"marker {progress.marker}")
    return 0


def run(args: argparse.Namespace) -> int:
    from capture.config import CaptureConfig
    from capture.kinesis import KinesisSink, S3DeadLetter
    from capture.metrics import MetricsPublisher
    from capture.service import CaptureService
    from capture.state import LocalStateStore, S3StateStore, StateStore

    state_dir = Path(args.state_dir)
    config = CaptureConfig.from_settings(
        _source_dsn(args), state_dir, stream=args.stream, tables=tuple(args.tables) if args.tables else None,
        slot=args.slot, publication=args.publication, state_store=args.state_store,
        heartbeat_seconds=args.heartbeat_seconds, max_batch_delay_ms=args.max_batch_delay_ms)
    cfg = settings()
    store: StateStore = (
        S3StateStore(cfg["buckets"]["raw"], cfg["prefixes"]["capture_state"], config.slot)
        if config.state_store == "s3" else LocalStateStore(state_dir, config.slot))
    service = CaptureService(
        config, KinesisSink(config.stream),
        S3DeadLetter(cfg["buckets"]["dead_letter"], cfg["prefixes"]["dead_letter_records"]),
        store, MetricsPublisher(state_dir / "status" / "capture.json"))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop.set())
    try:
        service.run()
    except TerminalError as exc:
        if isinstance(exc, ConfigError):
            raise  # a setting to fix: one line and exit 2, by the CLI
        print(f"totes-cdc: capture stopped: {exc}", file=sys.stderr)
        return 1
    return 0

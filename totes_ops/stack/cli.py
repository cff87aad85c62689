"""Subcommands of the local stack: ``up`` and ``demo``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from totes_cdc.runtime import add_state_dir_argument, tcp_port

if TYPE_CHECKING:
    from totes_ops.stack.up import StackOptions


def _add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-dsn", metavar="DSN",
                        help="use this source database (wal_level=logical) instead of starting one")
    parser.add_argument("--warehouse-dsn", metavar="DSN",
                        help="use this warehouse database instead of starting one")
    parser.add_argument("--seed", choices=["auto", "totesys", "synthetic", "none"], default="auto",
                        help="what to load into the source: the real totesys rows, synthetic rows "
                             "of the same shape, or nothing (default: totesys when its files are "
                             "found, otherwise synthetic; none with --source-dsn)")
    parser.add_argument("--seed-dir", type=Path,
                        help="folder holding the totesys data/ files (default: ../shared/totesys)")
    add_state_dir_argument(parser)
    for name in ("emulator", "source", "warehouse", "dashboard"):
        parser.add_argument(f"--{name}-port", type=tcp_port, metavar="PORT",
                            help=f"127.0.0.1 port for the {name} (default: a free one)")


def _options(args: argparse.Namespace) -> StackOptions:
    from totes_ops.stack.up import PIPELINE, StackOptions

    rate = getattr(args, "rate", 0.0)

    return StackOptions(
        state_dir=Path(args.state_dir), source_dsn=args.source_dsn, warehouse_dsn=args.warehouse_dsn,
        seed=args.seed, seed_dir=args.seed_dir, emulator_port=args.emulator_port,
        source_port=args.source_port, warehouse_port=args.warehouse_port,
        dashboard_port=args.dashboard_port, simulate_rate=rate,
        components=(*PIPELINE, "simulate") if rate else PIPELINE)


def _up(args: argparse.Namespace) -> int:
    from totes_ops.stack.up import run

    return run(_options(args))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up", help="run the whole pipeline locally until Ctrl-C",
        description="Start (or connect to) the source and warehouse PostgreSQL servers, the AWS "
                    "emulator with the pipeline's resources, and every component as a supervised "
                    "process; write <state-dir>/stack.json; stop it all on Ctrl-C.")
    _add_stack_arguments(up)
    up.set_defaults(func=_up)

    demo = subparsers.add_parser(
        "demo", help="`up` plus simulated business traffic; prints the dashboard URL",
        description="Everything `up` does, plus `simulate` traffic at --rate changes/s, so the "
                    "dashboard moves as orders arrive.")
    _add_stack_arguments(demo)
    demo.add_argument("--rate", type=float, default=5.0,
                      help="simulated business changes per second (default: 5)")
    demo.set_defaults(func=_up)

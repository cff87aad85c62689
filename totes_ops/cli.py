"""The ``totes-cdc`` command line: one entry point, a subcommand per capability.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``cli`` module; ``register`` only declares arguments (heavy imports happen when a command runs).
Errors a user can fix (ConfigError) and a service the command needs being out of reach
(TransientError, e.g. a database that cannot be connected to) are printed as one line and exit 2,
with no traceback.

Every command but ``up``/``demo`` finds a running local stack by its ``<state-dir>/stack.json``
(see :mod:`totes_ops.stackfile`) and takes from it the DSNs and AWS settings it was not given.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from totes_cdc.errors import ConfigError, TransientError
from totes_cdc.runtime import DEFAULT_STATE_DIR, DSN_ENV, STATE_DIR_ENV, default_state_dir
from totes_ops import stackfile

COMMAND_MODULES = (
    "totes_ops.stack.cli",
    "capture.cli",
    "warehouse_loader.cli",
    "totes_ops.ops_cli",
    "totes_ops.lake_cli",
    "totes_ops.source_check",
    "totes_ops.replay",
    "local_aws.cli",
)
# The commands that start a stack (and write stack.json) rather than use one.
STACK_STARTERS = ("up", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="totes-cdc",
        description="Change data capture from totesys (PostgreSQL) to a live star-schema warehouse.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('totes-cdc')}")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def use_running_stack(args: argparse.Namespace) -> None:
    """Fill the DSNs and AWS settings not given from the stack.json of ``args``' state dir.

    Sets ``args.stack`` (None when no live stack is found) and says on stderr what was taken, or
    that the file found is stale.
    """
    args.stack = None
    if args.command in STACK_STARTERS:
        return
    try:
        stack = stackfile.find(Path(getattr(args, "state_dir", None) or default_state_dir()))
    except stackfile.StaleStack as exc:
        print(f"totes-cdc: {exc}", file=sys.stderr)
        return
    if stack is None:
        return
    roles = getattr(args, "dsn_roles", {})
    taken = stackfile.apply(stack, {role: getattr(args, f"{role}_dsn") for role in roles}, os.environ)
    for role in taken.dsns:
        setattr(args, f"{role}_dsn", stack.dsn(role))
    args.stack = stack
    if taken.dsns or taken.aws:
        print(f"totes-cdc: {taken.describe()}", file=sys.stderr)


def require_dsns(args: argparse.Namespace) -> None:
    for role, required in getattr(args, "dsn_roles", {}).items():
        if required and getattr(args, f"{role}_dsn") is None:
            raise ConfigError(
                f"{args.command} needs the {role} database: give --{role}-dsn, set "
                f"${DSN_ENV[role]}, or run it where `totes-cdc up` is running "
                f"(its {stackfile.FILE_NAME} in --state-dir, ${STATE_DIR_ENV} or "
                f"{DEFAULT_STATE_DIR})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":  # botocore's INFO lines (where it found credentials) are noise
        logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        use_running_stack(args)
        require_dsns(args)
        result: int | None = args.func(args)
    except (ConfigError, TransientError) as exc:
        print(f"totes-cdc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result or 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``totes-cdc`` command line: one entry point, a subcommand per capability.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``cli`` module; ``register`` only declares arguments (heavy imports happen when a command runs).
:func:`totes_cdc.runtime.run` runs the command: errors a user can fix and services out of reach
are printed as one line and exit 2, with no traceback.

Every command but ``up``/``demo`` finds a running local stack by its ``<state-dir>/stack.json``
(see :mod:`totes_ops.stackfile`) and takes from it the DSNs and AWS settings it was not given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from totes_cdc.runtime import DEFAULT_STATE_DIR, STATE_DIR_ENV, command_parser, default_state_dir, run
from totes_ops import stackfile

COMMAND_MODULES = (
    "totes_ops.stack.cli",
    "capture.cli",
    "warehouse_loader.cli",
    "totes_ops.ops_cli",
    "totes_ops.lake_cli",
    "warehouse_loader.source_check",
    "totes_ops.replay",
    "totes_ops.resync_cli",
    "local_aws.cli",
)
# The commands that start a stack (and write stack.json) rather than use one.
STACK_STARTERS = ("up", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "totes-cdc", "Change data capture from totesys (PostgreSQL) to a live star-schema warehouse.",
        [importlib.import_module(name).register for name in COMMAND_MODULES])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('totes-cdc')}")
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


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, prepare=use_running_stack,
               dsn_hint=f", or run it where `totes-cdc up` is running (its {stackfile.FILE_NAME} in "
                        f"--state-dir, ${STATE_DIR_ENV} or {DEFAULT_STATE_DIR})")


if __name__ == "__main__":
    sys.exit(main())

"""The ``totes-cdc`` command line: one entry point, a subcommand per capability.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``cli`` module; ``register`` only declares arguments (heavy imports happen when a command runs).
Errors a user can fix (ConfigError) are printed as one line and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from totes_cdc.errors import ConfigError

COMMAND_MODULES = (
    "totes_cdc.stack.cli",
    "capture.cli",
    "warehouse_loader.cli",
    "totes_cdc.ops_cli",
    "stream_processors.cli",
)


def add_dsn_argument(parser: argparse.ArgumentParser, role: str, required: bool = True) -> None:
    """``--<role>-dsn``, defaulting to ``$TOTES_CDC_<ROLE>_DSN``.

    Passwords belong in the environment (or Secrets Manager), not in argv where ``ps`` shows them:
    the local stack hands DSNs to its components through these variables.
    """
    env = f"TOTES_CDC_{role.upper()}_DSN"
    parser.add_argument(f"--{role}-dsn", default=os.environ.get(env),
                        required=required and env not in os.environ, metavar="DSN",
                        help=f"libpq DSN of the {role} database (default: ${env}); "
                             "sslmode=require/verify-full for TLS")


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--state-dir``: where local runners keep durable state (default: $TOTES_CDC_STATE_DIR)."""
    parser.add_argument("--state-dir", default=os.environ.get("TOTES_CDC_STATE_DIR", ".totes-cdc"),
                        help="folder for local state: stack.json, checkpoints, logs "
                             "(default: $TOTES_CDC_STATE_DIR or .totes-cdc)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="totes-cdc",
        description="Change data capture from totesys (PostgreSQL) to a live star-schema warehouse.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int | None = args.func(args)
    except ConfigError as exc:
        print(f"totes-cdc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result or 0


if __name__ == "__main__":
    sys.exit(main())

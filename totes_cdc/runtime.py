"""What every command line shares: the state dir, the DSN variables, their options, the main loop.

The components' commands (``capture``, ``warehouse ...``) declare their options through these, and
each entry point (the operator shell's ``totes-cdc``, the capture image's) runs them with
:func:`run`, so a component never imports the shell to learn where its state lives.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from totes_cdc.errors import ConfigError, DatabaseError, TransientError, first_line

STATE_DIR_ENV = "TOTES_CDC_STATE_DIR"
DEFAULT_STATE_DIR = ".totes-cdc"
DSN_ENV = {"source": "TOTES_CDC_SOURCE_DSN", "warehouse": "TOTES_CDC_WAREHOUSE_DSN"}


def default_state_dir() -> str:
    return os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)


def alive(pid: int) -> bool:
    """A running process (a zombie, already dead but not reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel directly
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def add_dsn_argument(parser: argparse.ArgumentParser, role: str, required: bool = True) -> None:
    """``--<role>-dsn``, defaulting to ``$TOTES_CDC_<ROLE>_DSN``, else the running stack's.

    Passwords belong in the environment (or Secrets Manager), not in argv where ``ps`` shows them:
    the local stack hands DSNs to its components through these variables. A required DSN is
    checked once the running stack has been consulted, not by argparse.
    """
    env = DSN_ENV[role]
    parser.add_argument(f"--{role}-dsn", default=os.environ.get(env), metavar="DSN",
                        help=f"libpq DSN of the {role} database (default: ${env}, else the running "
                             "stack's); sslmode=require/verify-full for TLS")
    parser.set_defaults(dsn_roles={**(parser.get_default("dsn_roles") or {}), role: required})


def tcp_port(text: str, lowest: int = 1) -> int:
    """An argparse ``type`` for a port option: ``lowest`` (0: any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port ({lowest} to 65535)")
    return port


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--state-dir``: where local runners keep durable state (default: $TOTES_CDC_STATE_DIR)."""
    parser.add_argument("--state-dir", default=default_state_dir(),
                        help="folder for local state: stack.json, checkpoints, logs "
                             f"(default: ${STATE_DIR_ENV} or {DEFAULT_STATE_DIR})")


def command_parser(prog: str, description: str,
                   registers: Iterable[Callable[[Any], None]]) -> argparse.ArgumentParser:
    """A parser with ``--log-level`` and one subcommand per command each ``register`` declares.

    The defaults come from the settings: settings that cannot be read (a bad
    ``$TOTES_CDC_SETTINGS_OVERRIDES``) end the process here as argparse ends it for a bad option,
    one line and exit 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in registers:
        try:
            register(subparsers)
        except ConfigError as exc:
            parser.exit(2, f"{prog}: error: {exc}\n")
    return parser


def require_dsns(args: argparse.Namespace, hint: str = "") -> None:
    """ConfigError when a command's required DSN was given neither as an option nor a variable."""
    for role, required in getattr(args, "dsn_roles", {}).items():
        if required and getattr(args, f"{role}_dsn") is None:
            raise ConfigError(f"{args.command} needs the {role} database: give --{role}-dsn, set "
                              f"${DSN_ENV[role]}{hint}")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
        prepare: Callable[[argparse.Namespace], None] | None = None, dsn_hint: str = "") -> int:
    """Parse ``argv`` and run its command; exit status 2, with no traceback, for an error a user
    can fix (ConfigError, a statement a database refuses, no AWS region or credentials, a request
    AWS refuses) and for a service
    the command needs being out of reach (TransientError, an AWS endpoint); exit status 3, with its
    traceback, for a defect, so that a command's 1 (reconcile's differences, a resync to run again)
    never stands for a crash.

    ``prepare`` may fill what was not given (the shell takes DSNs from a running local stack)
    before the required DSNs are checked; ``dsn_hint`` ends the message of a missing one.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":  # botocore's INFO lines (where it found credentials) are noise
        logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        if prepare is not None:
            prepare(args)
        require_dsns(args, dsn_hint)
        result: int | None = args.func(args)
    except (ConfigError, DatabaseError, TransientError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (NoRegionError, NoCredentialsError) as exc:  # boto3 finds neither in its environment
        print(f"{parser.prog}: error: {args.command}: AWS: {exc} (set AWS_DEFAULT_REGION and "
              "credentials; locally: run it beside `totes-cdc up`, or set AWS_ENDPOINT_URL)",
              file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:  # botocore's own retries are spent
        print(f"{parser.prog}: error: {args.command}: AWS: {first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of stdout stopped early (`| head`): not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush goes nowhere
        return 0
    except Exception:
        traceback.print_exc()
        return 3
    return result or 0

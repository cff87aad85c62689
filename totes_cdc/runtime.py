"""What every command shares on the machine it runs on: the state dir, the DSN variables, their options.

The components' commands (``capture``, ``warehouse ...``) and the operator shell declare their
options through these, so a component never imports the shell to learn where its state lives.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--state-dir``: where local runners keep durable state (default: $TOTES_CDC_STATE_DIR)."""
    parser.add_argument("--state-dir", default=default_state_dir(),
                        help="folder for local state: stack.json, checkpoints, logs "
                             f"(default: ${STATE_DIR_ENV} or {DEFAULT_STATE_DIR})")

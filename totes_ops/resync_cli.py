"""``totes-cdc resync [--table T ...]``: capture's resync (``python -m capture resync``) from the
operator's shell, against the running local stack when there is one.

The stack's ``stack.json`` gives the source DSN and the emulator (as for every command), and the
resync's status file goes beside the running capture's, in the stack's run dir, where
``totes-cdc status`` and the dashboard read both. The command's arguments, progress lines and exit
codes are capture's (:func:`capture.cli.run_resync`; docs/operations.md).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from capture.cli import register_resync

    register_resync(subparsers)
    subparsers.choices["resync"].set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from capture.cli import run_resync

    if args.stack is not None:
        args.state_dir = str(args.stack.run_dir)
    return run_resync(args)

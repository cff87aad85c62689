"""Subcommands of the local stack: ``up`` (and ``demo``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declared in the next step of the foundation work."""

"""The main of every command line (totes_cdc.runtime.run): what a user sees when it ends."""

from __future__ import annotations

import subprocess
import sys

# A command printing far more than a pipe holds, run as every command is.
BIG_OUTPUT = """
import sys
from totes_cdc.runtime import command_parser, run

def register(subparsers):
    subparsers.add_parser("talk").set_defaults(func=lambda args: print("x" * 80 + "\\n" * 100_000))

sys.exit(run(command_parser("talk", "prints a lot", [register]), ["talk"]))
"""


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`totes-cdc lake query ... | head`: no BrokenPipeError traceback, exit 0."""
    command = subprocess.Popen([sys.executable, "-c", BIG_OUTPUT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert command.stdout is not None and command.stderr is not None
    command.stdout.read(100)
    command.stdout.close()
    assert command.wait(timeout=60) == 0
    assert command.stderr.read() == b""

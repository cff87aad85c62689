"""The main of every command line (totes_cdc.runtime.run): what a user sees when it ends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from moto import mock_aws

from totes_ops.cli import main

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


@pytest.fixture
def aws_credentials(monkeypatch):
    for name, value in (("AWS_DEFAULT_REGION", "eu-west-2"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_MAX_ATTEMPTS", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.mark.usefixtures("aws_credentials")
def test_an_aws_endpoint_out_of_reach_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert main(["replay", "--only", "files"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("totes-cdc: error: replay: AWS: Could not connect to the endpoint URL")
    assert len(err.splitlines()) == 1


@pytest.mark.usefixtures("aws_credentials")
def test_a_request_aws_refuses_is_one_line_and_exit_2(capsys):
    """The pipeline's queues are not there (another account, a deployment not made): no traceback."""
    with mock_aws():
        assert main(["replay", "--only", "files"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("totes-cdc: error: replay: AWS: An error occurred (") and len(err.splitlines()) == 1


DEFECT = """
import sys
from totes_cdc.runtime import command_parser, run

def register(subparsers):
    subparsers.add_parser("fail").set_defaults(func=lambda args: {}["no such key"])

sys.exit(run(command_parser("fail", "fails", [register]), ["fail"]))
"""


def test_a_defect_prints_its_traceback_and_exits_3_never_a_commands_1():
    command = subprocess.run([sys.executable, "-c", DEFECT], capture_output=True, text=True, timeout=60)
    assert command.returncode == 3
    assert "Traceback" in command.stderr and "KeyError: 'no such key'" in command.stderr


@pytest.mark.parametrize("overrides", ["{not json", "[1, 2]", '{"capture": "x"}'])
def test_settings_that_cannot_be_read_are_one_line_and_exit_2(overrides):
    """The commands' defaults come from the settings, read as the parser is built."""
    env = {**os.environ, "TOTES_CDC_SETTINGS_OVERRIDES": overrides}
    command = subprocess.run([sys.executable, "-m", "totes_ops.cli", "status"], capture_output=True,
                             text=True, timeout=60, env=env)
    assert command.returncode == 2
    assert command.stderr.startswith("totes-cdc: error: $TOTES_CDC_SETTINGS_OVERRIDES")
    assert len(command.stderr.splitlines()) == 1

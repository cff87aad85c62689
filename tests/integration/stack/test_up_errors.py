"""`totes-cdc up` refuses bad settings with one clear line and exit code 2, never a traceback."""

import socket
import subprocess
import sys

import pytest

from totes_ops.stack.ports import free_port

pytestmark = pytest.mark.integration


def run_cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "totes_ops", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def assert_clear_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("totes-cdc: error: ")
    for fragment in fragments:
        assert fragment in message


def test_unreachable_source_dsn(tmp_path, warehouse_dsn):
    port = free_port()
    result = run_cli("up", "--state-dir", str(tmp_path),
                     "--source-dsn", f"host=127.0.0.1 port={port} dbname=totesys user=u password=secret",
                     "--warehouse-dsn", warehouse_dsn, cwd=tmp_path)
    assert_clear_error(result, "cannot connect to the source database", f"u@127.0.0.1:{port}/totesys")
    assert "secret" not in result.stderr


def test_source_without_logical_wal_level_says_which_setting_to_change(tmp_path, warehouse_dsn):
    # The warehouse server runs with the default wal_level (replica).
    result = run_cli("up", "--state-dir", str(tmp_path), "--source-dsn", warehouse_dsn,
                     "--warehouse-dsn", warehouse_dsn, cwd=tmp_path)
    assert_clear_error(result, "wal_level = replica", "set wal_level = logical in postgresql.conf",
                       "rds.logical_replication = 1")


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", "--state-dir", str(tmp_path), "--emulator-port", str(port), cwd=tmp_path)
    assert_clear_error(result, f"port {port} on 127.0.0.1 is already in use", "the AWS emulator")


def test_missing_seed_file(tmp_path):
    result = run_cli("up", "--state-dir", str(tmp_path), "--seed", "totesys",
                     "--seed-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert_clear_error(result, "seed file missing:", "address.csv")


def test_every_subcommand_has_help(tmp_path):
    from totes_ops.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"up", "demo"} <= set(commands)
    for name in commands:
        result = run_cli(name, "--help", cwd=tmp_path)
        assert result.returncode == 0, name
        assert "usage: totes-cdc " + name in result.stdout

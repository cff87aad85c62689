"""Commands find a running `totes-cdc up` by its stack.json, and never use a stale one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from totes_cdc import runtime
from totes_cdc.errors import ConfigError
from totes_ops import cli, stackfile
from totes_ops.stack.up import StackOptions, new_stack

AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DSN or AWS variable set; the state dir is tmp_path (restored afterwards)."""
    for name in (*AWS_VARIABLES, *runtime.DSN_ENV.values()):
        # set first, so that teardown also removes what a command under test sets in os.environ
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv(runtime.STATE_DIR_ENV, str(tmp_path))
    return tmp_path


def write_stack(state_dir: Path, pid: int) -> dict:
    info = {"pid": pid, "source_dsn": "host=127.0.0.1 port=5001 dbname=source",
            "warehouse_dsn": "host=127.0.0.1 port=5002 dbname=warehouse",
            "aws_endpoint_url": "http://127.0.0.1:5003", "aws_region": "eu-west-2",
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
            "run_dir": str(state_dir / "run")}
    (state_dir / "stack.json").write_text(json.dumps(info))
    return info


@pytest.fixture
def up_pid():
    """A live process whose command line names totes-cdc, standing in for `totes-cdc up`."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "totes-cdc", "up"])
    yield process.pid
    process.kill()
    process.wait()


def gone_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def parse(*argv: str):
    args = cli.build_parser().parse_args(list(argv))
    cli.use_running_stack(args)
    return args


def test_dsns_and_aws_settings_not_given_come_from_the_running_stack(clean_env, capsys, up_pid):
    info = write_stack(clean_env, up_pid)
    args = parse("reconcile")
    assert (args.source_dsn, args.warehouse_dsn) == (info["source_dsn"], info["warehouse_dsn"])
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5003"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-2"
    assert args.stack.run_dir == clean_env / "run"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"totes-cdc: using the running stack of {clean_env / 'stack.json'} (up pid "
                   f"{up_pid}): source DSN, warehouse DSN, AWS endpoint http://127.0.0.1:5003 "
                   "with its region and credentials"]


def test_what_is_given_explicitly_wins_over_the_stack(clean_env, monkeypatch, capsys, up_pid):
    write_stack(clean_env, up_pid)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("TOTES_CDC_WAREHOUSE_DSN", "dbname=mine")
    args = parse("reconcile", "--source-dsn", "dbname=src")
    assert (args.source_dsn, args.warehouse_dsn) == ("dbname=src", "dbname=mine")
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9999"
    assert capsys.readouterr().err == ""            # nothing taken, nothing said


def test_state_dir_option_names_the_stack(clean_env, tmp_path_factory, capsys, up_pid):
    other = tmp_path_factory.mktemp("other")
    info = write_stack(other, up_pid)
    args = parse("status", "--state-dir", str(other))
    assert args.source_dsn == info["source_dsn"]
    assert str(other / "stack.json") in capsys.readouterr().err


def test_a_stale_stack_json_is_reported_and_not_used(clean_env, capsys):
    pid = gone_pid()
    write_stack(clean_env, pid)
    args = parse("reconcile")
    assert args.stack is None and args.source_dsn is None
    assert "AWS_ENDPOINT_URL" not in os.environ
    err = capsys.readouterr().err
    assert f"is stale: the `totes-cdc up` that wrote it (pid {pid}) is gone" in err
    with pytest.raises(ConfigError, match="reconcile needs the source database"):
        runtime.require_dsns(args)


def test_a_required_dsn_missing_everywhere_exits_2_with_one_line(clean_env, capsys):
    assert cli.main(["reconcile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("totes-cdc: error: reconcile needs the source database")
    assert "where `totes-cdc up` is running (its stack.json in --state-dir" in err[0]


def test_up_and_demo_do_not_use_a_stack_json(clean_env, capsys, up_pid):
    write_stack(clean_env, up_pid)
    args = parse("up")
    assert args.stack is None and args.source_dsn is None
    assert capsys.readouterr().err == ""


def test_a_pid_now_running_another_program_is_stale(clean_env, capsys):
    """After a reboot the recorded PID may be alive again, as something else."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        write_stack(clean_env, other.pid)
        args = parse("reconcile")
    finally:
        other.kill()
        other.wait()
    assert args.stack is None
    assert f"(pid {other.pid}) is gone" in capsys.readouterr().err


def test_unreadable_and_pidless_files_are_not_used(tmp_path):
    (tmp_path / "stack.json").write_text("{")
    with pytest.raises(stackfile.StaleStack, match="cannot be read"):
        stackfile.find(tmp_path)
    (tmp_path / "stack.json").write_text("{}")
    with pytest.raises(stackfile.StaleStack, match="names no `up` process"):
        stackfile.find(tmp_path)
    assert stackfile.find(tmp_path / "none") is None


def test_a_zombie_is_not_alive():
    process = subprocess.Popen(["true"])
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)   # exited, not yet reaped
    assert not runtime.alive(process.pid)
    process.wait()
    assert runtime.alive(os.getpid())


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("totes-cdc 0.")


def test_up_prints_the_commands_worth_running_next(tmp_path, monkeypatch):
    from totes_ops.stack.up import Stack, StackOptions, next_steps

    monkeypatch.chdir(tmp_path)
    stack = Stack(StackOptions(state_dir=Path(".totes-cdc")), tmp_path / "run", dashboard_port=8123)
    lines = next_steps(stack).splitlines()
    assert lines[0] == f"Next, in another terminal, in {tmp_path}:"
    assert [line.split()[1] for line in lines[1:3]] == ["status", "reconcile"]
    assert lines[3].split()[:2] == ["open", "http://127.0.0.1:8123/"]

    elsewhere = Stack(StackOptions(state_dir=tmp_path / "my state"), tmp_path / "run")
    assert next_steps(elsewhere).splitlines()[1] == (
        f"  export TOTES_CDC_STATE_DIR='{tmp_path / 'my state'}'")


def test_a_service_out_of_reach_is_one_line_and_exit_2(clean_env, capsys, monkeypatch):
    from totes_cdc.errors import TransientError

    def unreachable(args):
        raise TransientError("cannot connect to the source database u@127.0.0.1:1/totesys")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["status"].set_defaults(func=unreachable)
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "totes-cdc: error: cannot connect to the source database u@127.0.0.1:1/totesys"]


def test_the_run_dir_written_for_other_commands_is_absolute(tmp_path, monkeypatch):
    """stack.json is read from wherever a command runs: a relative run dir would point elsewhere."""
    monkeypatch.chdir(tmp_path)
    stack = new_stack(StackOptions(state_dir=Path(".totes-cdc")))
    assert stack.run_dir == tmp_path / ".totes-cdc" / "run" and stack.run_dir.is_dir()

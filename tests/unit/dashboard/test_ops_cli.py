"""The simulate/status/dashboard subcommands: arguments, help, progress display."""

import logging

import pytest

from totes_ops import simulate
from totes_ops.cli import build_parser, main


@pytest.mark.parametrize("command", ["simulate", "status", "dashboard"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    assert "usage: totes-cdc" in capsys.readouterr().out


def test_dsns_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("TOTES_CDC_WAREHOUSE_DSN", "dbname=wh")
    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", "dbname=src")
    args = build_parser().parse_args(["dashboard", "--port", "0"])
    assert (args.warehouse_dsn, args.source_dsn, args.host, args.port) == ("dbname=wh", "dbname=src",
                                                                           "127.0.0.1", 0)
    args = build_parser().parse_args(["simulate", "--rate", "5", "--seed", "3"])
    assert (args.source_dsn, args.rate, args.duration, args.seed) == ("dbname=src", 5.0, None, 3)


def test_progress_is_one_updating_line_on_a_terminal(capsys):
    show = simulate.progress_printer(tty=True)
    show(simulate.SimulationStats(changes=30, transactions=10, seconds=2.0, sales_orders=10))
    err = capsys.readouterr().err
    assert err.startswith("\r30 changes in 10 transactions, 2 s, 15.0 changes/s")


def test_progress_is_a_periodic_log_line_otherwise(caplog):
    show = simulate.progress_printer(tty=False)
    with caplog.at_level(logging.INFO, logger="totes_ops.simulate"):
        for second in (1.0, 5.0, 10.5, 12.0, 21.0):
            show(simulate.SimulationStats(changes=3, transactions=1, seconds=second))
    assert [r.getMessage().split(",")[1].strip() for r in caplog.records] == ["10 s", "21 s"]


def test_no_time_no_rate():
    assert simulate.SimulationStats().rate == 0.0


def test_status_with_nothing_to_read_says_why_everything_is_unknown(monkeypatch, capsys, tmp_path):
    for name in ("TOTES_CDC_WAREHOUSE_DSN", "TOTES_CDC_SOURCE_DSN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "no running stack found and no --source-dsn or --warehouse-dsn given" in err
    assert "unknown" in out


@pytest.mark.parametrize(("host", "reachable"), [
    ("127.0.0.1", False), ("::1", False), ("localhost", False),
    ("0.0.0.0", True), ("10.1.2.3", True), ("dash.example", True)])  # nosec B104: names, not binds
def test_the_dashboard_warns_when_other_machines_can_reach_it(host, reachable):
    from dashboard.server import exposed

    assert exposed(host) is reachable


def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["dashboard", "--port", "99999"])
    assert done.value.code == 2
    assert "argument --port: 99999 is not a TCP port (0 to 65535)" in capsys.readouterr().err

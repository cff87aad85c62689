"""The supervisor restarts a component that dies, says so, and stops only its own children."""

import logging
import time

from totes_ops.stack.supervisor import Component, Supervisor, child_env, totes_cdc_command


def test_a_crashed_component_is_restarted_with_a_log_line(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("totes_ops.stack.supervisor.MIN_BACKOFF", 0.1)
    # `--help` exits at once: a component that keeps dying.
    quitter = Component("quitter", totes_cdc_command("--help"), backoff=0.1)
    supervisor = Supervisor([quitter], child_env({}), tmp_path / "logs")
    with caplog.at_level(logging.INFO, logger="totes_ops.stack.supervisor"):
        supervisor.start()
        deadline = time.monotonic() + 30
        while quitter.restarts < 2 and time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.05)
        supervisor.stop()
    assert quitter.restarts >= 2
    assert "component quitter" in caplog.text and "restarting in" in caplog.text
    assert "usage: totes-cdc" in (tmp_path / "logs" / "quitter.log").read_text()


def test_stop_terminates_running_components(tmp_path):
    sleeper = Component("sleeper", ["sleep", "60"])
    supervisor = Supervisor([sleeper], child_env({}), tmp_path / "logs")
    supervisor.start()
    process = sleeper.process
    time.sleep(0.2)
    supervisor.check()
    assert sleeper.restarts == 0 and process.poll() is None
    supervisor.stop(timeout=5)
    assert process.poll() is not None
    assert supervisor.pids() == {}

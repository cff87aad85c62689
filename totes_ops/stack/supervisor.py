"""Runs the pipeline's components as separate OS processes and restarts any that dies.

Each component is a command, usually a ``totes-cdc`` subcommand; its output goes to
``<run-dir>/logs/<name>.log``. A component that exits while the stack is up is restarted after
a backoff (1 s doubling to 30 s, reset once it has stayed up for a minute), with a log line.
Children are told to end if the supervisor itself dies (PR_SET_PDEATHSIG): no orphans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
MIN_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the supervisor exits, however it exits."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux/glibc: children then outlive a killed supervisor
        pass


@dataclass
class Component:
    """A supervised command (see :func:`totes_cdc_command`)."""

    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = MIN_BACKOFF
    restart_at: float | None = None
    restarts: int = 0
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, components: Sequence[Component], env: Mapping[str, str], log_dir: Path) -> None:
        self.components = list(components)
        self.env = dict(env)
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    def _spawn(self, component: Component) -> None:
        if component.log_file is None:
            component.log_file = (self.log_dir / f"{component.name}.log").open("ab")
        component.process = subprocess.Popen(
            list(component.argv), env=self.env,
            stdout=component.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509 (no threads here)
        component.started_at = time.monotonic()
        component.restart_at = None
        log.info("started %s (pid %d), log: %s", component.name, component.process.pid,
                 self.log_dir / f"{component.name}.log")

    def start(self) -> None:
        for component in self.components:
            self._spawn(component)

    def check(self) -> None:
        """Restart components that have exited (call regularly)."""
        now = time.monotonic()
        for c in self.components:
            if c.process is not None and c.process.poll() is not None:
                code = c.process.returncode
                if now - c.started_at > HEALTHY_AFTER:
                    c.backoff = MIN_BACKOFF
                log.warning("component %s (pid %d) exited with code %s; restarting in %.0f s "
                            "(see %s)", c.name, c.process.pid, code, c.backoff,
                            self.log_dir / f"{c.name}.log")
                c.process = None
                c.restart_at = now + c.backoff
                c.backoff = min(c.backoff * 2, MAX_BACKOFF)
            if c.process is None and c.restart_at is not None and now >= c.restart_at:
                c.restarts += 1
                self._spawn(c)

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self.components
                if c.process is not None and c.process.poll() is None}

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every component, wait, then SIGKILL what is left (only our own children)."""
        running = [c.process for c in self.components
                   if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop within %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        for c in self.components:
            if c.log_file is not None:
                c.log_file.close()
                c.log_file = None
            c.process = None


def totes_cdc_command(*args: str) -> list[str]:
    """argv of a ``totes-cdc`` subcommand run by this very interpreter."""
    return [sys.executable, "-m", "totes_ops", *args]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The supervisor's environment plus ``extra``, with unbuffered Python output for live logs."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}

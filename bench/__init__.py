"""Benchmarks: ``make bench`` (``python -m bench [NAME ...]``) runs them and writes BENCHMARKS.md.

Each ``bench/bench_<name>.py`` has ``run() -> str``: it measures (medians of repeated runs, with its
reference measured in the same run) and returns a Markdown section, kept in
``bench/results/<name>.md``. BENCHMARKS.md is the machine header plus every section, so running
one benchmark again refreshes its section without rerunning the others.

The loaders the benchmarks run in this process have Arrow's allocator as the loader's Lambda has
it: importing ``warehouse_loader`` first sets its options before pyarrow loads
(totes_cdc/allocator.py). Capture runs as its own process, with its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import warehouse_loader  # noqa: F401  (see the docstring)
from totes_ops.stack.emulator import Emulator
from totes_ops.stack.postgres import LocalPostgres, make_base_dir


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a running process, in MiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_cpu_seconds() -> tuple[float, float]:
    """Seconds the machine's CPUs were busy (user, nice, system, irq, softirq) and stolen by the
    hypervisor, since boot (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """Seconds a running process has spent on a CPU, all its threads (utime + stime), and with
    ``reaped_children`` the children it has reaped (cutime + cstime); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15 if reaped_children else 13]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@contextlib.contextmanager
def local_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL server (no logical replication) for one benchmark, stopped and removed
    afterwards."""
    base = make_base_dir()
    server = LocalPostgres(base / "pg", logical=False)
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def source_and_emulator() -> Iterator[tuple[Path, LocalPostgres, Emulator]]:
    """A logical source server and the AWS emulator for one benchmark, stopped afterwards."""
    base = make_base_dir()
    server = LocalPostgres(base / "pg")
    server.init()
    server.start()
    emulator = Emulator()
    emulator.start()
    try:
        yield base, server, emulator
    finally:
        emulator.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

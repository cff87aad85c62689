"""Run benchmarks and assemble BENCHMARKS.md (see bench/__init__.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from totes_ops.stack.postgres import find_bindir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py"))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    bindir = find_bindir()
    pg = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True,
                        check=False)
    import fastavro
    import psycopg2
    import pyarrow

    return (f"- Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}\n"
            f"- Python {platform.python_version()}, psycopg2 {psycopg2.__version__.split()[0]}, "
            f"fastavro {fastavro.__version__}, pyarrow {pyarrow.__version__}\n"
            f"- PostgreSQL: {pg.stdout.strip()} ({bindir})\n"
            f"- AWS emulator: moto (server mode) on 127.0.0.1\n")


def assemble() -> None:
    sections = [f.read_text() for name in available() if (f := RESULTS / f"{name}.md").exists()]
    header = ("# Benchmarks\n\nWritten by `make bench` (`python -m bench`); each section says when "
              "it was last run. The machines are shared and noisy: figures are medians of "
              "repeated runs, and each is set beside a reference measured in the same run.\n\n"
              f"## Machine (as of {dt.date.today().isoformat()})\n\n{machine()}\n")
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(sections))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.names or available():
        print(f"== bench {name}", flush=True)
        section = importlib.import_module(f"bench.bench_{name}").run()
        (RESULTS / f"{name}.md").write_text(section)
        print(section, flush=True)
    assemble()
    return 0


if __name__ == "__main__":
    sys.exit(main())

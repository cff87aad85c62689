"""Capture sets mimalloc's options (capture.MIMALLOC_OPTIONS) before pyarrow loads, keeping any
value the environment already gives (BENCHMARKS.md, initial snapshot)."""

from __future__ import annotations

import os
import subprocess  # nosec B404: this interpreter on a fixed script
import sys

import capture

SCRIPT = ("import os, sys; import capture; import pyarrow; "
          "print(' '.join(os.environ[n] for n in sorted(capture.MIMALLOC_OPTIONS)), "
          "pyarrow.default_memory_pool().backend_name)")


def run(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    return subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env}, check=True,  # nosec B603
                          capture_output=True, text=True).stdout.strip()


def test_importing_capture_sets_mimallocs_options_before_pyarrow_loads() -> None:
    assert capture.MIMALLOC_OPTIONS == {"MIMALLOC_ARENA_EAGER_COMMIT": "0",
                                        "MIMALLOC_ALLOW_LARGE_OS_PAGES": "0", "MIMALLOC_PURGE_DELAY": "-1"}
    # sorted names: ALLOW_LARGE_OS_PAGES, ARENA_EAGER_COMMIT, PURGE_DELAY
    assert run({}) == "0 0 -1 mimalloc"


def test_a_value_in_the_environment_is_kept() -> None:
    assert run({"MIMALLOC_PURGE_DELAY": "10"}) == "0 0 10 mimalloc"

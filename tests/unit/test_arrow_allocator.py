"""Capture and the loader set mimalloc's options (each package's MIMALLOC_OPTIONS,
totes_cdc/allocator.py) before pyarrow loads, keeping any value the environment already gives
(BENCHMARKS.md, initial snapshot and bulk load)."""

from __future__ import annotations

import os
import subprocess  # nosec B404: this interpreter on a fixed script
import sys

import pytest

import capture
import warehouse_loader

NAMES = ("MIMALLOC_ALLOW_LARGE_OS_PAGES", "MIMALLOC_ARENA_EAGER_COMMIT", "MIMALLOC_PURGE_DELAY")


def run(package: str, env: dict[str, str]) -> str:
    """Each of NAMES as the process has it once ``package`` is imported ('-': unset), then the
    allocator pyarrow took."""
    script = (f"import os; import {package}; import pyarrow; "
              f"print(' '.join(os.environ.get(n, '-') for n in {NAMES!r}), "
              "pyarrow.default_memory_pool().backend_name)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    return subprocess.run([sys.executable, "-c", script], env={**clean, **env}, check=True,  # nosec B603
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize(("package", "options", "seen"), [
    ("capture", capture.MIMALLOC_OPTIONS, "0 0 -1 mimalloc"),
    ("warehouse_loader", warehouse_loader.MIMALLOC_OPTIONS, "0 0 - mimalloc"),
])
def test_importing_the_package_sets_mimallocs_options_before_pyarrow_loads(
        package: str, options: dict[str, str], seen: str) -> None:
    values = zip(NAMES, seen.split()[:3], strict=True)
    assert {name: value for name, value in values if value != "-"} == options
    assert run(package, {}) == seen


def test_a_value_in_the_environment_is_kept() -> None:
    assert run("capture", {"MIMALLOC_PURGE_DELAY": "10"}) == "0 0 10 mimalloc"
    assert run("warehouse_loader", {"MIMALLOC_ARENA_EAGER_COMMIT": "1"}) == "0 1 - mimalloc"

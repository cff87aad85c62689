"""Options of Arrow's allocator in a process of the pipeline, set before pyarrow loads.

mimalloc (bundled with pyarrow, its default allocator here) reads its options from the environment
when pyarrow's library loads: a package sets them as it is imported, before any of its modules
imports pyarrow. A process that loaded pyarrow earlier keeps mimalloc's defaults, and a value
already in the environment is kept. This module imports nothing that loads pyarrow.

With its defaults, mimalloc commits each arena eagerly, in transparent huge pages. Capture's
snapshot then spent 28 % of its samples in the kernel zeroing pages; a 1,000,000-row load by 2
loaders spent a median of 1.7 s of system CPU in the loader's process, against 0.3 s with arenas
committed as they are used, in one series (capture/__init__.py and warehouse_loader/__init__.py
give the measurements).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Arenas committed as they are used, in ordinary pages.
LAZY_ARENAS = {"MIMALLOC_ARENA_EAGER_COMMIT": "0", "MIMALLOC_ALLOW_LARGE_OS_PAGES": "0"}


def set_options(options: Mapping[str, str]) -> None:
    """Put ``options`` in the environment, but for names it already has."""
    for name, value in options.items():
        os.environ.setdefault(name, value)

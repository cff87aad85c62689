"""The capture service: reads the source's logical replication slot (pgoutput) and writes every row
change, as a contract change event, to the Kinesis stream.

Modules: ``decoder`` (pgoutput bytes → messages), ``events`` (messages → change events),
``producer`` (KPL aggregation and ordered PutRecords), ``kinesis`` (the AWS adapters),
``checkpoint`` (the acknowledged LSN), ``state`` and ``snapshot`` (the resumable initial snapshot),
``source`` (catalog, publication, slot, heartbeat queries), ``service`` (the replication loop),
``metrics``, ``config`` and ``cli``.
"""

import os

# Arrow's allocator in this process, mimalloc (bundled with pyarrow), reads its options when
# pyarrow's library loads: they are set here, before any capture module imports pyarrow (a process
# that loaded it earlier keeps mimalloc's defaults; a value already in the environment is kept).
# With its defaults, mimalloc committed each arena eagerly in transparent huge pages and gave memory
# back between files: a 1,000,000-row snapshot spent 1.6-2.6 s of system CPU, mostly the kernel
# zeroing pages (28 % of capture's samples), against 0.5 s with these; side by side 1.16 times as
# fast at 1,000,000 rows and 1.15-1.21 at 10,000,000, peak RSS about 60 MiB higher at 10,000,000
# rows and no higher at 1,000,000 (BENCHMARKS.md, initial snapshot).
MIMALLOC_OPTIONS = {"MIMALLOC_ARENA_EAGER_COMMIT": "0", "MIMALLOC_ALLOW_LARGE_OS_PAGES": "0",
                    "MIMALLOC_PURGE_DELAY": "-1"}
for _name, _value in MIMALLOC_OPTIONS.items():
    os.environ.setdefault(_name, _value)

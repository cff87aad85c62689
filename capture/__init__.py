"""The capture service: reads the source's logical replication slot (pgoutput) and writes every row
change, as a contract change event, to the Kinesis stream.

Modules: ``decoder`` (pgoutput bytes → messages), ``events`` (messages → change events),
``producer`` (KPL aggregation and ordered PutRecords), ``kinesis`` (the AWS adapters),
``checkpoint`` (the acknowledged LSN), ``state`` and ``snapshot`` (the resumable initial snapshot),
``source`` (catalog, publication, slot, heartbeat queries), ``service`` (the replication loop),
``metrics``, ``config`` and ``cli``.
"""

from totes_cdc.allocator import LAZY_ARENAS, set_options

# Arrow's allocator in this process (totes_cdc/allocator.py): arenas committed as used, and memory
# kept between files. With mimalloc's defaults a 1,000,000-row snapshot spent 1.6-2.6 s of system
# CPU against 0.5 s with these; side by side 1.16 times as fast at 1,000,000 rows and 1.15-1.21 at
# 10,000,000, peak RSS about 60 MiB higher at 10,000,000 rows and no higher at 1,000,000
# (BENCHMARKS.md, initial snapshot).
MIMALLOC_OPTIONS = {**LAZY_ARENAS, "MIMALLOC_PURGE_DELAY": "-1"}
set_options(MIMALLOC_OPTIONS)

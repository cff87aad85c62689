"""The warehouse loader: applies processed Parquet files to the PostgreSQL star schema.

Each file is applied in one transaction: the mirror of the source tables (position-guarded), then
the dimension rows the file touches, then one fact row per version. See docs/warehouse_loader.md.
"""

from totes_cdc.allocator import LAZY_ARENAS, set_options

# Arrow's allocator in this process (totes_cdc/allocator.py): arenas committed as used. A
# 1,000,000-row snapshot load by 2 loaders in one process spent 0.6-3.6 s of system CPU in it
# (median 1.7 s, 11 runs) with mimalloc's defaults, against 0.2-1.1 s (median 0.3, 5 runs) with these;
# its peak RSS was 353-357 / 397-405 MiB at 1,000,000 / 10,000,000 rows against 372-389 / 416-425.
# Memory kept between files as well (capture's MIMALLOC_PURGE_DELAY=-1) raised it to 448-459 MiB
# at 10,000,000 rows, close to the benchmark's bound of 1.2 times the figure at 1,000,000.
MIMALLOC_OPTIONS = LAZY_ARENAS
set_options(MIMALLOC_OPTIONS)

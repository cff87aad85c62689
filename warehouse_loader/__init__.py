"""The warehouse loader: applies processed Parquet files to the PostgreSQL star schema.

Each file is applied in one transaction: the mirror of the source tables (position-guarded), then
the dimension rows the file touches, then one fact row per version. See docs/warehouse_loader.md.
"""

from totes_cdc.allocator import LAZY_ARENAS, set_options

# Arrow's allocator in this process (totes_cdc/allocator.py): arenas committed as used. In one
# series of 1,000,000-row snapshot loads by 2 loaders in one process, alternated, the loader's
# process spent 0.6-3.6 s of system CPU per load with mimalloc's defaults (median 1.7 s, 11 runs)
# and 0.2-1.1 s with these (median 0.3, 5 runs); in a later series (6 alternated pairs) both spent
# 0.26-0.36 s in the quiet pairs and the loads took as long (median pair ratio 1.006). Peak RSS
# 353-357 / 397-405 MiB at 1,000,000 / 10,000,000 rows against 372-389 / 416-425. Memory kept
# between files as well (capture's MIMALLOC_PURGE_DELAY=-1) raised it to 448-459 MiB at
# 10,000,000 rows, close to the benchmark's bound of 1.2 times the figure at 1,000,000.
MIMALLOC_OPTIONS = LAZY_ARENAS
set_options(MIMALLOC_OPTIONS)

"""Block ranges of a snapshot read: they cover the table, the last one open, sized by the estimate."""

from __future__ import annotations

from capture.snapshot import RangeFile, plan_ranges


def test_ranges_cover_every_block_and_the_last_is_open():
    assert plan_ranges(1000, 100.0, 10_000) == [(0, 100), (100, 200), (200, 300), (300, 400), (400, 500),
                                               (500, 600), (600, 700), (700, 800), (800, 900), (900, None)]
    assert plan_ranges(0, 60.0, 100_000) == [(0, None)]  # empty: rows added later are read too
    assert plan_ranges(5, 0.0, 2) == [(0, 2), (2, 4), (4, None)]  # no statistics: a row a block at least


def test_range_files_are_named_after_position_and_range():
    assert RangeFile(0x1_0000_0A00, 3).name == "snapshot-0000000100000A00-000003"

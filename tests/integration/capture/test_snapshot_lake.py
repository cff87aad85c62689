"""The initial snapshot goes straight to the lake, in parallel ranges; the stream carries only changes."""

from __future__ import annotations

import pytest

from tests.integration.capture.conftest import (
    Writer,
    assert_versions_exact,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from tests.integration.capture.lake import markers, positioned, processed_keys, read_lake
from totes_cdc.contract import SEQ_RANGE

pytestmark = pytest.mark.integration


def test_snapshot_in_parallel_ranges_lands_in_the_lake_and_the_stream_carries_only_changes(
        totesys_dsn, capture_factory):
    seed_designs(totesys_dsn, 3000)
    execute(totesys_dsn, "ANALYZE design")
    service = capture_factory(totesys_dsn, snapshot_chunk_rows=400, snapshot_workers=3)
    with Writer(totesys_dsn) as writer:
        capture_factory.start(service)
        wait_for(lambda: service._phase == "streaming", what="streaming")
        wait_for(lambda: writer.transactions > 200, what="source writes")
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    stream, lake = read_stream(), read_lake()
    assert {e.op for e in stream} <= {"c", "u", "d"} and {e.op for e in lake} == {"r"}
    assert len(lake) >= 3000 - writer.transactions and len({e.lsn for e in lake}) == 1
    assert len({e.seq for e in lake}) == len(lake) and all(-SEQ_RANGE < e.seq < 0 for e in lake)
    progress = service._store.load().tables["public.design"]
    assert len(progress.ranges) > 3 and progress.complete
    [marker] = markers()
    assert (marker.table, marker.lsn, marker.rows, marker.resync) == ("design", lake[0].lsn, len(lake), False)
    assert set(marker.files) | {progress.marker} == set(processed_keys())
    assert_versions_exact(positioned(lake + stream), totesys_dsn)


def test_an_empty_table_is_read_as_no_file_and_its_marker(totesys_dsn, capture_factory):
    """Regression: Arrow's CSV reader refused the empty COPY output of an empty range, and the
    snapshot of an empty table never completed."""
    service = capture_factory(totesys_dsn)
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    [marker] = markers()
    assert (marker.rows, marker.files) == (0, ()) and read_lake() == []

"""Resync: the snapshot's read again, on demand, while capture streams."""

from __future__ import annotations

import pytest

from capture.__main__ import main
from tests.integration.capture.conftest import (
    Writer,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from tests.integration.capture.lake import markers, positioned, read_lake
from tests.integration.capture.test_snapshot_resume import replay, source_designs

pytestmark = pytest.mark.integration


def test_resync_reads_a_table_again_beside_the_streaming_capture(totesys_dsn, capture_factory, tmp_path,
                                                                    monkeypatch):
    seed_designs(totesys_dsn, 500)
    service = capture_factory(totesys_dsn)
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", totesys_dsn)
    with Writer(totesys_dsn):  # updates, inserts and deletes before, during and after the resync
        execute(totesys_dsn, "DELETE FROM design WHERE design_id BETWEEN 10 AND 19")
        assert main(["resync", "--table", "design", "--slot", service.config.slot,
                     "--state-dir", str(tmp_path / "resync")]) == 0
    wait_for(slot_caught_up(totesys_dsn, service.config.slot), what="capture to catch up")
    initial, again = sorted(markers(), key=lambda m: m.lsn)
    assert (initial.resync, again.resync) == (False, True) and again.lsn > initial.lsn
    lake = read_lake()
    resynced = [e for e in lake if e.lsn == again.lsn]
    assert len(resynced) == again.rows and not {str(i) for i in range(10, 20)} & {
        e.after["design_id"] for e in resynced}
    assert replay(positioned(lake + read_stream())) == source_designs(totesys_dsn)

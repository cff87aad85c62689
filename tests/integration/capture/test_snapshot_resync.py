"""Resync: the snapshot's read again, on demand, while capture streams."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from capture.__main__ import main
from tests.conftest import query
from tests.integration.capture.conftest import (
    Writer,
    execute,
    read_stream,
    seed_designs,
    slot_caught_up,
    wait_for,
)
from tests.integration.capture.lake import markers, positioned, processed_keys, read_lake
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


def test_a_resync_killed_by_kill_9_part_way_leaves_no_slot_and_run_again_loses_nothing(
        totesys_dsn, capture_factory, aws_env, tmp_path, monkeypatch):
    """What the runbook says of a resync that stops: run it again. The killed one's temporary slot
    goes with its connection, its files stay in the lake without a marker (true reads at its C'),
    and the second one's marker is the only resync marker."""
    seed_designs(totesys_dsn, 20_000)
    execute(totesys_dsn, "ANALYZE design")
    service = capture_factory(totesys_dsn)
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    slot = service.config.slot
    (initial,) = markers()
    overrides = json.dumps({"state_dir": str(tmp_path / "killed"), "slot": slot, "tables": ["design"],
                            "snapshot_chunk_rows": 500, "snapshot_workers": 3, "resync": ["design"]})

    def resync_files() -> int:  # processed files of a read at another position than the initial one
        return sum(f"{initial.lsn:016X}" not in key for key in processed_keys() if "/public.design/" in key)

    def resync_slots() -> list[str]:
        return [name for name, in query(totesys_dsn, "SELECT slot_name FROM pg_replication_slots "
                                                     f"WHERE slot_name LIKE '{slot[:40]}_resync_%'")]

    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", totesys_dsn)
    rng = random.Random()
    with Writer(totesys_dsn):  # updates, inserts and deletes all along
        process = subprocess.Popen([sys.executable, "-m", "tests.integration.capture.run_capture", overrides],
                                   env={**aws_env, "TOTES_CDC_SOURCE_DSN": totesys_dsn},
                                   stderr=subprocess.DEVNULL)
        try:
            target = rng.randrange(1, 20)  # of 40 ranges
            wait_for(lambda: resync_files() >= target, what="the resync's first files")
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            process.kill()
            process.wait()
        killed_files = resync_files()
        wait_for(lambda: not resync_slots(), what="the killed resync's slot to go")
        assert main(["resync", "--table", "design", "--slot", slot,
                     "--state-dir", str(tmp_path / "again")]) == 0
    wait_for(slot_caught_up(totesys_dsn, slot), what="capture to catch up")
    again = [m for m in markers() if m.resync]
    assert len(again) == 1 and again[0].lsn > initial.lsn, (killed_files, again)
    killed = {e.lsn for e in read_lake()} - {initial.lsn, again[0].lsn}
    assert len(killed) == 1 and initial.lsn < killed.pop() < again[0].lsn, killed_files
    assert replay(positioned(read_lake() + read_stream())) == source_designs(totesys_dsn), killed_files
    assert not resync_slots()

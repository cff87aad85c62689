"""`totes-cdc resync`: the tables read into the lake with their completion marker saying resync,
progress in log lines and in status/resync.json, clear exit codes; the temporary slot it reads
from is gone afterwards."""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pyarrow.parquet as pq
import pytest

from capture import snapshot
from tests.conftest import query
from tests.integration.capture.conftest import execute, seed_designs, wait_for
from totes_cdc.lakefiles import ObjectStore, StoreError
from totes_cdc.settings import settings
from totes_cdc.snapshot_marker import read_marker
from totes_ops.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """The command stops on SIGTERM/SIGINT by handlers of its own: give the test runner its back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_resync_reads_a_table_into_the_lake_with_its_marker_and_shows_progress(
        totesys_dsn: str, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    seed_designs(totesys_dsn, 250)
    caplog.set_level(logging.INFO, logger="capture")
    assert main(["resync", "--table", "design", "--source-dsn", totesys_dsn,
                 "--state-dir", str(tmp_path)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("public.design: 250 rows read at ")
    assert "copy of public.design 250 rows, done" in caplog.text

    [copy] = json.loads((tmp_path / "status" / "resync.json").read_text())["copies"]
    assert (copy["table"], copy["rows_done"], copy["finished"]) == ("public.design", 250, True)

    key = line.rsplit(" ", 1)[1]
    body = boto3.client("s3").get_object(Bucket=settings()["buckets"]["processed"], Key=key)["Body"]
    marker = read_marker(pq.read_schema(io.BytesIO(body.read())).metadata)
    assert marker is not None
    assert (marker.schema, marker.table, marker.rows, marker.resync) == ("public", "design", 250, True)
    # The server drops a temporary slot as its session ends, after the client has closed it.
    wait_for(lambda: query(totesys_dsn, "SELECT count(*) FROM pg_replication_slots")[0][0] == 0,
             10, "the resync's temporary slot to be dropped")


def _refused_put(self: ObjectStore, bucket: str, key: str, body: bytes, content_type: str) -> bool:
    raise StoreError(f"cannot write s3://{bucket}/{key}: SlowDown")


def _lost_source(*_: Any, **__: Any) -> Any:
    raise psycopg2.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize(("target", "failure", "said"), [
    (ObjectStore, ("put_new", _refused_put), "cannot write s3://"),
    (snapshot.LakeSnapshot, ("_read_range", _lost_source), "source: server closed the connection"),
], ids=["the lake refuses a put", "the source goes away"])
def test_a_resync_that_fails_part_way_exits_1_saying_why_and_run_again_completes(
        totesys_dsn: str, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, target: type, failure: tuple[str, Any], said: str) -> None:
    """A failure retrying may fix, once the resync is under way (S3 refusing a put after the
    client's retries, the source going away), is exit 1 and "run it again", not the 2 of a setting
    to fix; the resync run again completes."""
    seed_designs(totesys_dsn, 250)
    with monkeypatch.context() as patched:
        patched.setattr(target, *failure)
        assert main(["resync", "--table", "design", "--source-dsn", totesys_dsn,
                     "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"totes-cdc: resync failed: {said}") and err.endswith(": run it again\n")
    assert len(err.splitlines()) == 1
    assert main(["resync", "--table", "design", "--source-dsn", totesys_dsn,
                 "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("public.design: 250 rows read at ")


def test_resync_of_a_table_that_is_not_there_exits_2_with_one_line(
        totesys_dsn: str, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resync", "--table", "no_such_table", "--source-dsn", totesys_dsn,
                 "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("totes-cdc: error: ") and len(err.splitlines()) == 1


def test_resync_of_a_table_capture_does_not_stream_exits_2_naming_it(
        totesys_dsn: str, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The loader mirrors only captured tables: one outside the publication is refused up front,
    not read into the lake to be dead-lettered there."""
    execute(totesys_dsn, "CREATE TABLE audit_extra (id int PRIMARY KEY)",
            "CREATE PUBLICATION totes_cdc FOR TABLE design")
    assert main(["resync", "--table", "design", "audit_extra", "--source-dsn", totesys_dsn,
                 "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "totes-cdc: error: not captured (not in publication totes_cdc): public.audit_extra\n")


def test_resync_with_a_slot_name_postgresql_refuses_exits_2_with_one_line(
        totesys_dsn: str, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resync", "--slot", "Bad-Slot", "--table", "design", "--source-dsn", totesys_dsn,
                 "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("totes-cdc: error: invalid replication slot name 'Bad-Slot': "
                                       "use up to 63 lower-case letters, digits and underscores\n")


def test_a_resync_held_back_by_an_open_transaction_says_which(
        totesys_dsn: str, aws: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new slot waits for every transaction open on the source: the resync says which one it is
    waiting for instead of saying nothing."""
    seed_designs(totesys_dsn, 5)
    monkeypatch.setattr(snapshot, "WAIT_REPORT_SECONDS", 0.5)
    caplog.set_level(logging.INFO, logger="capture")
    blocker = psycopg2.connect(totesys_dsn)
    with blocker.cursor() as cur:
        cur.execute("INSERT INTO design (design_name, file_location, file_name, created_at, last_updated) "
                    "SELECT design_name, file_location, file_name, created_at, last_updated FROM design "
                    "LIMIT 1")
    expected = ("it waits for the transactions open on the source to end; the oldest: pid "
                f"{blocker.get_backend_pid()}")

    def release() -> None:  # once the resync has said what holds it (the command needs the main thread)
        try:
            wait_for(lambda: expected in caplog.text, 30, "the resync to say what it waits for")
        finally:
            blocker.rollback()
            blocker.close()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        assert main(["resync", "--table", "design", "--source-dsn", totesys_dsn,
                     "--state-dir", str(tmp_path)]) == 0
    finally:
        releaser.join(timeout=60)
    assert expected in caplog.text

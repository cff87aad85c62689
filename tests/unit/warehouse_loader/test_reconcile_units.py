"""reconcile.history's replay of a completed read's sweep (the ghost tombstones the loader gives),
and RawZone's reads of a raw zone that fails now and then."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import boto3
import fastavro
import pytest
from botocore.exceptions import FlexibleChecksumError
from moto import mock_aws

from totes_cdc.contract import GHOST_SEQ, OP_DELETE, OP_INSERT, OP_SNAPSHOT, snapshot_seq
from totes_cdc.errors import ConfigError
from warehouse_loader.reconcile import READ_ATTEMPTS, RawZone, history

AT = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
SWEPT_AT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def event(op: str, lsn: int, seq: int, row: int) -> dict[str, object]:
    image = {"id": str(row), "name": f"row {row}"}
    return {"op": op, "lsn": lsn, "seq": seq, "commit_ts": AT, "unchanged": [],
            "before": image if op == OP_DELETE else None, "after": None if op == OP_DELETE else image}


def test_a_sweep_tombstones_the_rows_its_read_did_not_see_as_the_loader_does() -> None:
    records = [event(OP_INSERT, 100, 1, 1),                 # not read at 200: a ghost
               event(OP_INSERT, 100, 2, 2), event(OP_SNAPSHOT, 200, snapshot_seq(1), 2),  # read
               event(OP_INSERT, 100, 3, 3), event(OP_DELETE, 250, 1, 3),  # its delete came after
               event(OP_INSERT, 100, 4, 5), event(OP_INSERT, 260, 1, 5),  # a ghost, inserted again
               event(OP_INSERT, 300, 1, 4)]                 # inserted after the read
    replay = history(records, "id", [(200, SWEPT_AT)])
    ghosts = [(v.key, v.values["name"]) for v in replay.versions
              if (v.op, v.lsn, v.seq, v.commit_ts) == (OP_DELETE, 200, GHOST_SEQ, SWEPT_AT)]
    assert ghosts == [("1", "row 1"), ("5", "row 5")]
    assert sorted(replay.current) == ["2", "4", "5"]
    assert history(records, "id").current.keys() == {"1", "2", "4", "5"}  # no sweep, no ghost


class FlakyS3:
    """An S3 client whose first ``failures`` object reads fail their checksum, as a cut body does."""

    def __init__(self, s3: Any, failures: int) -> None:
        self._s3, self.failures = s3, failures

    def get_paginator(self, name: str) -> Any:
        return self._s3.get_paginator(name)

    def get_object(self, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise FlexibleChecksumError(error_msg="Expected checksum did not match")
        return self._s3.get_object(**kwargs)


def raw_zone(failures: int, monkeypatch: pytest.MonkeyPatch) -> RawZone:
    monkeypatch.setattr("warehouse_loader.reconcile.time.sleep", lambda _seconds: None)
    s3 = boto3.client("s3", region_name="eu-west-2")
    s3.create_bucket(Bucket="raw", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    body = io.BytesIO()
    fastavro.writer(body, {"type": "record", "name": "e", "fields": [{"name": "id", "type": "int"}]},
                    [{"id": 1}, {"id": 2}])
    s3.put_object(Bucket="raw", Key="raw/public.staff/1.avro", Body=body.getvalue())
    return RawZone(FlakyS3(s3, failures), "raw", "raw/")


@mock_aws
def test_a_raw_file_whose_read_fails_a_few_times_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    assert raw_zone(READ_ATTEMPTS - 1, monkeypatch).records("staff") == [{"id": 1}, {"id": 2}]


@mock_aws
def test_a_raw_file_that_cannot_be_read_ends_reconcile_with_its_prefix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the raw zone s3://raw/raw/public\.staff/"):
        raw_zone(READ_ATTEMPTS, monkeypatch).records("staff")

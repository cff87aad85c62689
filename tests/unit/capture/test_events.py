"""Messages → change events, the resume filter and the state stores."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from moto import mock_aws

from capture.decoder import UNCHANGED, Begin, Delete, Insert, Relation, RelationColumn, Truncate, Update
from capture.errors import CaptureError
from capture.events import EventBuilder
from capture.snapshot import ResumeFilter
from capture.state import LocalStateStore, S3StateStore, SnapshotState, TableProgress

TS = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
RELATION = Relation(1, "public", "item", "d", (
    RelationColumn(1, "id", 23, -1), RelationColumn(0, "name", 25, -1), RelationColumn(0, "big", 25, -1)))


class Catalog:
    def __init__(self, primary_key=("id",)):
        self.primary_key = primary_key

    def describe(self, relation):
        return ["integer", "text", "text"][:len(relation.columns)], self.primary_key


def builder(primary_key=("id",)):
    b = EventBuilder(Catalog(primary_key))
    b.relation(RELATION)
    b.begin(Begin(500, TS, 9))
    return b


def test_insert_update_delete_truncate_events():
    b = builder()
    insert, key = b.change(Insert(1, ("1", "a", None)))
    assert (insert.op, insert.lsn, insert.seq, insert.xid, key) == ("c", 500, 1, 9, "public.item/1")
    assert insert.after == {"id": "1", "name": "a", "big": None} and insert.columns[0].key
    update, _ = b.change(Update(1, ("1", "b", UNCHANGED)))
    assert update.after == {"id": "1", "name": "b"} and update.unchanged == ("big",) and update.seq == 2
    moved, key = b.change(Update(1, ("2", "b", None), ("1", None, None), "K"))
    assert moved.before == {"id": "1"} and key == "public.item/2"
    delete, key = b.change(Delete(1, ("2", None, None), "K"))
    assert delete.before == {"id": "2"} and delete.after is None and key == "public.item/2"
    [(truncate, key)] = b.truncate(Truncate(0, (1,)))
    assert truncate.op == "t" and key == "public.item" and truncate.seq == 5


def test_composite_key_is_in_column_order_as_the_contract_defines_it():
    event, key = builder(primary_key=("name", "id")).change(Insert(1, ("1", "a", None)))
    assert key == event.partition_key == "public.item/1/a"


def test_table_without_primary_key_is_keyed_on_its_replica_identity(caplog):
    b = EventBuilder(Catalog(None))
    b.relation(Relation(2, "public", "nokey", "f", (RelationColumn(1, "a", 23, -1),
                                                    RelationColumn(1, "b", 25, -1))))
    assert "has no primary key" in caplog.text and "FULL" in caplog.text
    b.begin(Begin(1, TS, 1))
    event, key = b.change(Delete(2, ("1", "x"), "O"))
    assert event.before == {"a": "1", "b": "x"} and key == "public.nokey/1/x"


def test_bad_input_is_named():
    b = builder()
    with pytest.raises(CaptureError, match="before its Relation"):
        b.change(Insert(99, ("1",)))
    with pytest.raises(CaptureError, match="3 columns"):
        b.change(Insert(1, ("1",)))
    with pytest.raises(CaptureError, match="binary"):
        b.change(Insert(1, (b"\x01", None, None)))


def _event(op, lsn, before=None, after=None):
    b = builder()
    b.begin(Begin(lsn, TS, 1))
    message = {"c": Insert(1, (after, "n", None)),
               "u": Update(1, (after, "n", None), None if before is None else (before, None, None), "K"),
               "d": Delete(1, (before, None, None), "K")}[op]
    return b.change(message)[0]


def test_resume_filter_drops_only_what_the_resumed_snapshot_holds():
    state = SnapshotState("s", 100, {"public.item": TableProgress(
        rows=10, last_key=["10"], key_columns=["id"], key_types=["integer"],
        segments=[(None, 100), (["10"], 200)])})
    f = ResumeFilter(state)
    kept = _event("u", 150, after="5")
    assert f.apply(kept) is kept                                  # row read at 100: change kept
    assert f.apply(_event("u", 150, after="50")) is None         # row read at 200 already has it
    late = _event("u", 250, after="50")
    assert f.apply(late) is late                                  # after the second snapshot
    gone = _event("d", 150, before="50")
    assert f.apply(gone) is gone                                  # a delete is never dropped
    moved = f.apply(_event("u", 150, before="5", after="50"))    # leaves the read range: delete old key
    assert moved.op == "d" and moved.before == {"id": "5"} and moved.after is None
    into = _event("u", 150, before="50", after="5")
    assert f.apply(into) is into
    b = builder()
    b.begin(Begin(150, TS, 1))
    [(truncate, _)] = b.truncate(Truncate(0, (1,)))
    assert f.apply(truncate) is truncate


def test_resume_filter_for_a_table_without_key():
    state = SnapshotState("s", 100, {"public.item": TableProgress(segments=[(None, 200)])})
    assert ResumeFilter(state).apply(_event("c", 150, after="1")) is None


def test_local_state_store_round_trip(tmp_path):
    store = LocalStateStore(tmp_path, "slot")
    assert store.load() is None
    state = SnapshotState("slot", 7, {"public.a": TableProgress(done=True, rows=3, segments=[(None, 7)])})
    store.save(state)
    assert store.load() == state and state.complete(["public.a"]) and not state.complete(["public.b"])
    store.path.write_text("{")
    with pytest.raises(CaptureError, match="corrupt"):
        store.load()


@mock_aws
def test_s3_state_store_round_trip():
    s3 = boto3.client("s3", region_name="eu-west-2")
    s3.create_bucket(Bucket="raw", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    store = S3StateStore("raw", "capture-state/", "slot", s3)
    assert store.load() is None
    state = SnapshotState("slot", 7, {"public.a": TableProgress(last_key=["1"], segments=[(["1"], 9)])})
    store.save(state)
    assert store.load() == state
    body = s3.get_object(Bucket="raw", Key="capture-state/slot.json")["Body"].read()
    assert json.loads(body)["slot"] == "slot"
    s3.put_object(Bucket="raw", Key="capture-state/slot.json", Body=b"[")
    with pytest.raises(CaptureError, match="corrupt"):
        store.load()

"""Messages → change events, the resume filter and the state stores."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from capture.decoder import (
    UNCHANGED,
    Begin,
    Delete,
    Insert,
    Relation,
    RelationColumn,
    Truncate,
    Update,
    decode,
)
from capture.errors import CaptureError
from capture.events import EventBuilder
from capture.state import LocalStateStore, RangeRead, S3StateStore, SnapshotState, TableProgress
from totes_cdc.lakefiles import StoreError

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
    [(insert, key)] = b.change(Insert(1, ("1", "a", None)))
    assert (insert.op, insert.lsn, insert.seq, insert.xid, key) == ("c", 500, 1, 9, "public.item/1")
    assert insert.after == {"id": "1", "name": "a", "big": None} and insert.columns[0].key
    [(update, _)] = b.change(Update(1, ("1", "b", UNCHANGED)))
    assert update.after == {"id": "1", "name": "b"} and update.unchanged == ("big",) and update.seq == 2
    [(delete, key)] = b.change(Delete(1, ("1", None, None), "K"))
    assert delete.before == {"id": "1"} and delete.after is None and key == "public.item/1"
    [(truncate, key)] = b.truncate(Truncate(0, (1,)))
    assert truncate.op == "t" and key == "public.item" and truncate.seq == 4


def test_key_change_is_the_delete_of_the_old_key_then_the_insert_of_the_new_key():
    b = builder()
    b.change(Insert(1, ("7", "x", None)))
    (gone, old_key), (moved, new_key) = b.change(Update(1, ("2", "b", None), ("1", None, None), "K"))
    assert (gone.op, gone.seq, gone.before, gone.after) == ("d", 2, {"id": "1"}, None)
    assert old_key == "public.item/1"
    assert (moved.op, moved.seq, moved.before, new_key) == ("c", 3, None, "public.item/2")
    assert moved.after == {"id": "2", "name": "b", "big": None} and moved.unchanged == ()
    assert old_key == gone.partition_key and new_key == moved.partition_key
    [(after, _)] = b.change(Delete(1, ("2", None, None), "K"))
    assert after.seq == 4  # positions stay unique and consecutive in the transaction


def test_key_change_positions_are_the_same_when_the_transaction_is_read_again():
    messages = [Insert(1, ("7", "x", None)), Update(1, ("2", "b", None), ("1", None, None), "K"),
                Update(1, ("2", "c", None))]
    identities = [[e.identity for m in messages for e, _ in builder().change(m)] for _ in range(2)]
    assert identities[0] == identities[1]
    assert [seq for *_, seq in identities[0]] == [1, 1, 2, 1]  # each builder() begins anew
    b = builder()
    seqs = [e.seq for m in messages for e, _ in b.change(m)]
    assert seqs == [1, 2, 3, 4]


def test_key_change_under_replica_identity_full_fills_toast_unchanged_columns_from_the_old_row():
    (gone, _), (moved, _) = builder().change(
        Update(1, ("2", "b", UNCHANGED), ("1", "a", "large value"), "O"))
    assert gone.before == {"id": "1", "name": "a", "big": "large value"}
    assert moved.after == {"id": "2", "name": "b", "big": "large value"} and moved.unchanged == ()


def test_key_change_under_default_identity_leaves_toast_unchanged_columns_listed():
    """The old key alone does not hold the value: the new key's event lists the column; its value is
    the old key's last one, as of the delete right before it (docs/capture.md)."""
    (gone, _), (moved, _) = builder().change(Update(1, ("2", "b", UNCHANGED), ("1", None, None), "K"))
    assert (gone.op, gone.before) == ("d", {"id": "1"})
    assert moved.op == "c" and moved.after == {"id": "2", "name": "b"} and moved.unchanged == ("big",)
    assert moved.seq == gone.seq + 1


def test_old_image_with_the_same_key_is_one_update():
    """PostgreSQL also sends the old key when it is stored out of line, or the old row under
    REPLICA IDENTITY FULL for every update: the key did not change, so it stays one event."""
    b = builder()
    [(update, key)] = b.change(Update(1, ("1", "b", None), ("1", None, None), "K"))
    assert (update.op, update.before, key) == ("u", {"id": "1"}, "public.item/1")
    [(full, _)] = b.change(Update(1, ("1", "c", UNCHANGED), ("1", "b", "v"), "O"))
    assert (full.op, full.after, full.unchanged) == ("u", {"id": "1", "name": "c"}, ("big",))


def test_old_image_without_the_primary_key_cannot_show_a_key_change():
    """REPLICA IDENTITY USING INDEX on other columns: the old image holds those, not the primary key."""
    b = EventBuilder(Catalog(("id",)))
    b.relation(Relation(1, "public", "item", "i", (RelationColumn(0, "id", 23, -1),
                                                   RelationColumn(1, "name", 25, -1),
                                                   RelationColumn(0, "big", 25, -1))))
    b.begin(Begin(500, TS, 9))
    [(update, key)] = b.change(Update(1, ("2", "b", None), (None, "a", None), "K"))
    assert (update.op, update.before, key) == ("u", {"name": "a"}, "public.item/2")


def test_table_without_primary_key_sends_a_changed_identity_as_delete_and_insert():
    b = EventBuilder(Catalog(None))
    b.relation(Relation(2, "public", "nokey", "f", (RelationColumn(1, "a", 23, -1),
                                                    RelationColumn(1, "b", 25, -1))))
    b.begin(Begin(1, TS, 1))
    (gone, old_key), (new, new_key) = b.change(Update(2, ("1", "y"), ("1", "x"), "O"))
    assert (gone.op, gone.before, old_key) == ("d", {"a": "1", "b": "x"}, "public.nokey/1/x")
    assert (new.op, new.after, new_key, new.seq) == ("c", {"a": "1", "b": "y"}, "public.nokey/1/y", 2)


def test_recorded_pgoutput_of_a_key_change_gives_the_old_keys_delete_and_the_new_keys_insert():
    """The bytes a real server sent (data/pgoutput.json, recorded by record_pgoutput.py): the
    UPDATE of item's key 2 to 3 (the old key sent, 'K'), and nokey's UPDATE under REPLICA
    IDENTITY FULL (the old row sent, 'O': its identity is every column)."""
    class RecordedCatalog:
        def describe(self, relation):
            if relation.name == "nokey":
                return ["integer", "text"], None
            return ["integer", "text", "text", "numeric(10,2)", '"Mood"', "boolean",
                    "timestamp with time zone", "integer"][:len(relation.columns)], ["id"]

    b = EventBuilder(RecordedCatalog())
    events = []
    for data in json.loads((Path(__file__).parent / "data" / "pgoutput.json").read_text())["v1"]:
        message = decode(bytes.fromhex(data))
        if isinstance(message, Relation):
            b.relation(message)
        elif isinstance(message, Begin):
            b.begin(message)
        elif isinstance(message, (Insert, Update, Delete)):
            events += [(e.table, e.op, e.seq, key, e.before, e.unchanged) for e, key in b.change(message)]
    assert events[2:9] == [
        ("item", "u", 1, "public.item/1", None, ("big",)),
        ("item", "d", 1, "public.item/2", {"id": "2"}, ()),
        ("item", "c", 2, "public.item/3", None, ()),
        ("item", "d", 1, "public.item/3", {"id": "3"}, ()),
        ("nokey", "c", 1, "public.nokey/1/a", None, ()),
        ("nokey", "d", 1, "public.nokey/1/a", {"a": "1", "b": "a"}, ()),
        ("nokey", "c", 2, "public.nokey/1/b", None, ())]


def test_composite_key_is_in_column_order_as_the_contract_defines_it():
    [(event, key)] = builder(primary_key=("name", "id")).change(Insert(1, ("1", "a", None)))
    assert key == event.partition_key == "public.item/1/a"


def test_table_without_primary_key_is_keyed_on_its_replica_identity(caplog):
    b = EventBuilder(Catalog(None))
    b.relation(Relation(2, "public", "nokey", "f", (RelationColumn(1, "a", 23, -1),
                                                    RelationColumn(1, "b", 25, -1))))
    assert "has no primary key" in caplog.text and "FULL" in caplog.text
    b.begin(Begin(1, TS, 1))
    [(event, key)] = b.change(Delete(2, ("1", "x"), "O"))
    assert event.before == {"a": "1", "b": "x"} and key == "public.nokey/1/x"


def test_bad_input_is_named():
    b = builder()
    with pytest.raises(CaptureError, match="before its Relation"):
        b.change(Insert(99, ("1",)))
    with pytest.raises(CaptureError, match="3 columns"):
        b.change(Insert(1, ("1",)))
    with pytest.raises(CaptureError, match="binary"):
        b.change(Insert(1, (b"\x01", None, None)))


def _events(op, lsn, before=None, after=None):
    b = builder()
    b.begin(Begin(lsn, TS, 1))
    message = {"c": Insert(1, (after, "n", None)),
               "u": Update(1, (after, "n", None), None if before is None else (before, None, None), "K"),
               "d": Delete(1, (before, None, None), "K")}[op]
    return [event for event, _ in b.change(message)]


def _event(op, lsn, before=None, after=None):
    [event] = _events(op, lsn, before, after)
    return event


def test_local_state_store_round_trip(tmp_path):
    store = LocalStateStore(tmp_path, "slot")
    assert store.load() is None
    state = SnapshotState("slot", 7, {"public.a": TableProgress(
        ranges=[(0, None)], done={0: RangeRead(7, 3, ["p/a.parquet"])}, marker="p/m.parquet")})
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
    state = SnapshotState("slot", 7, {"public.a": TableProgress(
        ranges=[(0, 5), (5, None)], done={1: RangeRead(9, 2, ["p/b.parquet"])}, estimate=4)}, resync=True)
    store.save(state)
    assert store.load() == state
    body = s3.get_object(Bucket="raw", Key="capture-state/slot.json")["Body"].read()
    assert json.loads(body)["slot"] == "slot"
    s3.put_object(Bucket="raw", Key="capture-state/slot.json", Body=b"[")
    with pytest.raises(CaptureError, match="corrupt"):
        store.load()


@mock_aws
def test_s3_state_store_that_cannot_save_says_where_and_lets_the_session_retry():
    s3 = boto3.client("s3", region_name="eu-west-2")  # no bucket: S3 refuses the put
    with pytest.raises(StoreError, match=r"cannot save capture state s3://raw/capture-state/slot\.json"):
        S3StateStore("raw", "capture-state/", "slot", s3).save(SnapshotState("slot", 7, {}))

"""The pgoutput decoder, on bytes recorded off a real server (see record_pgoutput.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capture.decoder import (
    PG_EPOCH,
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
    decode,
)
from capture.errors import DecodeError

RECORDED = json.loads((Path(__file__).parent / "data" / "pgoutput.json").read_text())


def messages(name):
    out, in_stream = [], False
    for text in RECORDED[name]:
        message = decode(bytes.fromhex(text), in_stream)
        in_stream = isinstance(message, StreamStart) or (in_stream and not isinstance(message, StreamStop))
        out.append(message)
    return out


def test_protocol_1_text_values():
    decoded = messages("v1")
    relation = next(m for m in decoded if isinstance(m, Relation) and m.name == "item")
    assert [c.name for c in relation.columns][:3] == ["id", "name", "big"]
    assert [c.key for c in relation.columns][:2] == [True, False]
    assert relation.replica_identity == "d"
    assert any(isinstance(m, Type) and m.name == "Mood" for m in decoded)
    first = next(m for m in decoded if isinstance(m, Insert))
    assert first.new[:2] == ("1", "one") and first.new[3:6] == ("12.50", "happy", "t")
    assert len(first.new[2]) == 5000
    nulls = [m for m in decoded if isinstance(m, Insert)][1]
    assert nulls.new == ("2", None, None, None, None, None, None)
    updates = [m for m in decoded if isinstance(m, Update)]
    assert updates[0].new[2] is UNCHANGED and updates[0].old is None
    assert updates[1].old_kind == "K" and updates[1].old[0] == "2" and updates[1].new[0] == "3"
    assert updates[2].old_kind == "O" and updates[2].old == ("1", "a")
    deletes = [m for m in decoded if isinstance(m, Delete)]
    assert [d.old_kind for d in deletes] == ["K", "O"]
    notes = [m for m in decoded if isinstance(m, Message)]
    assert [(m.prefix, m.transactional, m.content) for m in notes] == [
        ("tx_prefix", True, b"in a transaction"), ("totes_cdc_heartbeat", False, b"beat")]
    truncate = next(m for m in decoded if isinstance(m, Truncate))
    assert len(truncate.relation_ids) == 2 and truncate.options == 3
    begin, commit = decoded[0], next(m for m in decoded if isinstance(m, Commit))
    assert isinstance(begin, Begin) and begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.commit_ts == commit.commit_ts > PG_EPOCH
    added = [m for m in decoded if isinstance(m, Relation) and m.name == "item"][1]
    assert added.columns[-1].name == "extra"


def test_protocol_1_binary_values():
    update = next(m for m in messages("v1_binary") if isinstance(m, Update))
    assert update.new[0] == b"\x00\x00\x00\x01" and update.new[2] is UNCHANGED


def test_protocol_2_streamed_transactions():
    decoded = messages("v2")
    starts = [m for m in decoded if isinstance(m, StreamStart)]
    assert starts[0].first_segment and not starts[1].first_segment
    streamed = [m for m in decoded if isinstance(m, (Insert, Relation)) and m.xid is not None]
    assert streamed and {m.xid for m in streamed} == {s.xid for s in starts}
    commit = next(m for m in decoded if isinstance(m, StreamCommit))
    abort = next(m for m in decoded if isinstance(m, StreamAbort))
    assert commit.xid == starts[0].xid and abort.xid == abort.subxid != commit.xid


@pytest.mark.parametrize("data", [b"", b"Z", b"B\x00", b"I\x00\x00\x00\x01X", b"C" + b"\x00" * 26,
                                  b"E\x00", b"I\x00\x00\x00\x01N\x00\x01q"])
def test_malformed_messages_raise_decode_error(data):
    with pytest.raises(DecodeError):
        decode(data)


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_decode_error(data):
    try:
        decode(data)
    except DecodeError:
        pass


@given(st.sampled_from(sorted({t[:2] for name in RECORDED for t in RECORDED[name]})), st.binary(max_size=40))
def test_random_bodies_of_every_type_raise_only_decode_error(kind, body):
    for in_stream in (False, True):
        try:
            decode(bytes.fromhex(kind) + body, in_stream)
        except DecodeError:
            pass


# A test-only encoder for tuple messages: encode → decode must give the values back.
def _tuple(values):
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        elif isinstance(value, bytes):
            out += b"b" + struct.pack(">i", len(value)) + value
        else:
            raw = value.encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


values = st.lists(st.one_of(st.none(), st.just(UNCHANGED), st.text(max_size=20), st.binary(max_size=10)),
                  max_size=8)


@given(st.integers(0, 2**32 - 1), values, st.one_of(st.none(), values), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_update_round_trip(relid, new, old, in_stream, xid):
    head = b"U" + (struct.pack(">I", xid) if in_stream else b"") + struct.pack(">I", relid)
    data = head + (b"" if old is None else b"O" + _tuple(old)) + b"N" + _tuple(new)
    message = decode(data, in_stream)
    assert message == Update(relid, tuple(new), None if old is None else tuple(old),
                             None if old is None else "O", xid if in_stream else None)


@given(st.integers(0, 2**64 - 1), st.integers(-(2**40), 2**40), st.integers(0, 2**32 - 1))
def test_begin_round_trip(lsn, micros, xid):
    message = decode(b"B" + struct.pack(">QqI", lsn, micros, xid))
    assert message.final_lsn == lsn and message.xid == xid
    assert round((message.commit_ts - PG_EPOCH).total_seconds() * 1e6) == micros

"""A snapshot read's files built column-wise equal what the contract and the processor write per event."""

from __future__ import annotations

import datetime as dt
import io
from unittest.mock import patch

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_processors.files import parquet_table
from stream_processors.records import typed_event
from totes_cdc import contract, snapshot_files
from totes_cdc.contract import ChangeEvent, Column
from totes_cdc.lakefiles import avro_container, avro_file
from totes_cdc.snapshot_files import _long_size, _put_long, processed_table, raw_container, record_bodies

COLUMNS = (Column("id", "integer", True), Column("name", "text"), Column("price", "numeric(10,2)"),
           Column("at", "timestamp without time zone"), Column("ok", "boolean"))
TAKEN = dt.datetime(2026, 11, 29, 12, 0, 1, 123456, tzinfo=dt.UTC)

texts = st.one_of(st.none(), st.text(max_size=20), st.text(min_size=60, max_size=70),
                  st.just("x" * 9000))


def _events(names: list[str | None], lsn: int, ordinals: list[int]) -> list[ChangeEvent]:
    return [ChangeEvent(contract.OP_SNAPSHOT, "public", "item", lsn, contract.snapshot_seq(o), TAKEN,
                        COLUMNS, after={"id": str(o), "name": name, "price": "12.50",
                                        "at": "2026-11-29 10:00:00.5", "ok": "t" if o % 2 else None},
                        snapshot=True) for name, o in zip(names, ordinals, strict=True)]


def _split(data: memoryview, sizes: np.ndarray) -> list[bytes]:
    ends = np.cumsum(sizes)
    return [bytes(data[end - size:end]) for end, size in zip(ends.tolist(), sizes.tolist(), strict=True)]


def _columns(events: list[ChangeEvent]) -> list[pa.Array]:
    return [pa.array([e.after[c.name] for e in events], pa.string()) for c in COLUMNS]  # type: ignore[index]


@settings(max_examples=60, deadline=None)
@given(names=st.lists(texts, min_size=1, max_size=30), lsn=st.integers(0, 2**40),
       first=st.integers(1, 2**31 - 100))
def test_record_bodies_are_the_contract_encoding_of_each_read(names, lsn, first):
    ordinals = list(range(first, first + len(names)))
    events = _events(names, lsn, ordinals)
    seqs = np.array([e.seq for e in events], np.int64)
    bodies = record_bodies("public", "item", COLUMNS, lsn=lsn, seqs=seqs, taken_at=TAKEN,
                           values=_columns(events))
    assert _split(*bodies.laid()) == [contract.encode(e)[10:] for e in events]
    data, sizes = bodies.laid(1)
    records = [contract.decode_record(contract.encode(e)) for e in events[1:]]
    container = avro_container(data, sizes, "k")
    assert container == avro_file(records, "k")
    assert list(fastavro.reader(io.BytesIO(container))) == records  # zlib inflates ISA-L's deflate


@settings(max_examples=25, deadline=None)
@given(names=st.lists(texts, min_size=1, max_size=400), join_bytes=st.integers(1, 200_000))
@example(names=["x" * 9000] * 120 + ["a"] * 300, join_bytes=5_000)  # five blocks, parts of a few reads
@example(names=["x" * 9000] * 120 + ["a"] * 300, join_bytes=400_000)
def test_the_raw_container_joined_a_part_at_a_time_is_the_container_of_all_bodies(names, join_bytes):
    """Blocks of 256,000 bytes end where they would in one container of all the bodies, however
    the parts fall: a part holding no whole block grows, a block's start carries to the next."""
    events = _events(names, 0x5000, list(range(1, len(names) + 1)))
    bodies = record_bodies("public", "item", COLUMNS, lsn=0x5000, seqs=np.array([e.seq for e in events]),
                           taken_at=TAKEN, values=_columns(events))
    with patch.object(snapshot_files, "_JOIN_BYTES", join_bytes):
        ours = raw_container(bodies, "k")
    assert ours == avro_container(*bodies.laid(), "k")
    assert list(fastavro.reader(io.BytesIO(ours))) == [contract.decode_record(contract.encode(e))
                                                        for e in events]


def test_the_compiled_longs_are_avro_longs():
    for value in (0, -1, 1, 63, -64, 64, 8191, 8192, -(2**31) + 1, 2**40, -(2**62), 2**63 - 1, -(2**63)):
        out = np.zeros(12, np.uint8)
        end = _put_long(out, 1, value)
        assert (out[1:end].tobytes(), _long_size(value)) == (contract.avro_long(value), end - 1)


def test_processed_rows_are_the_processor_rows_of_the_same_events():
    events = _events(["a", None, "", "é" * 3], 0x5000, [1, 2, 3, 300])
    seqs = np.array([e.seq for e in events], np.int64)
    ours = processed_table(COLUMNS, lsn=0x5000, seqs=seqs, taken_at=TAKEN, values=_columns(events))
    theirs = parquet_table([typed_event(contract.encode(e)) for e in events])
    assert ours.equals(theirs, check_metadata=True)
    buf = io.BytesIO()
    pq.write_table(ours, buf)
    assert pq.read_table(io.BytesIO(buf.getvalue())).to_pylist() == theirs.to_pylist()

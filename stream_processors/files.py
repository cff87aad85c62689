"""The files a batch produces, as bytes, and their deterministic object keys. No I/O.

A batch is named by its shard and its first and last Kinesis sequence numbers, so delivering the
same batch again yields the same keys and the same bytes (but for the processed file's stage times,
below): a retry or replay duplicates nothing.

A processed file of a batch that knows its stage times carries them in its Parquet key-value
metadata (totes_cdc.stages); its columns stay the contract's.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from totes_cdc import contract, stages
from totes_cdc.contract import Column
from totes_cdc.lakefiles import Partition, avro_container, avro_file, parquet_bytes

from .columnar import DecodedBatch, Ints
from .records import TypedEvent, row_image


@dataclass(frozen=True)
class BatchId:
    """A delivered batch: one shard, a range of sequence numbers."""

    shard_id: str
    first: str
    last: str
    # Epoch seconds: Kinesis accepted the batch's last record; the processor read the batch;
    # capture read the batch's last event (None: its records carry no time). Not part of the
    # batch's identity (a retry reads it later).
    accepted: float | None = field(default=None, compare=False)
    read: float | None = field(default=None, compare=False)
    captured: float | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return f"{self.shard_id}-{self.first}-{self.last}"


def partitions(events: Iterable[TypedEvent]) -> dict[Partition, list[TypedEvent]]:
    """Events grouped by table and commit date, each group in arrival order."""
    groups: dict[Partition, list[TypedEvent]] = {}
    for item in events:
        event = item.event
        commit_date = event.commit_ts.astimezone(dt.UTC).date()
        groups.setdefault(Partition(event.schema, event.table, commit_date), []).append(item)
    return groups


def union_columns(events: Iterable[TypedEvent]) -> tuple[list[Column], set[str]]:
    """Every column any event carries, in first-seen order, and the names whose type differs
    between events (a type change at the source inside one batch): those are written as text."""
    columns: dict[str, Column] = {}
    conflicts: set[str] = set()
    for item in events:
        for column in item.event.columns:
            seen = columns.setdefault(column.name, column)
            if seen.type != column.type:
                conflicts.add(column.name)
    for name in conflicts:
        columns[name] = Column(name, "text", columns[name].key)
    return list(columns.values()), conflicts


def parquet_table(events: Sequence[TypedEvent]) -> pa.Table:
    """One processed row per event: the META columns, then the union of the table's columns."""
    columns, conflicts = union_columns(events)
    schema = contract.parquet_schema(columns)
    plain = [item.event for item in events]
    data: list[list[Any]] = [
        [e.op for e in plain],
        [e.lsn for e in plain],
        [e.seq for e in plain],
        [e.xid for e in plain],
        [e.commit_ts for e in plain],
        [e.snapshot for e in plain],
        [list(e.unchanged) for e in plain],
    ]
    for column in columns:
        if column.name in conflicts:
            data.append([row_image(item.event).get(column.name) for item in events])
        else:
            data.append([item.row.get(column.name) for item in events])
    arrays = [pa.array(values, type=field.type) for values, field in zip(data, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_file(events: Sequence[TypedEvent]) -> bytes:
    return _parquet_bytes(parquet_table(events))


def batch_partitions(batch: DecodedBatch) -> dict[Partition, Ints]:
    """:func:`partitions` of a decoded batch: the indices of each partition's events."""
    day = batch.day
    if not len(day):
        return {}
    group = batch.table * (int(day.max()) - int(day.min()) + 1) + (day - day.min())
    distinct, first = np.unique(group, return_index=True)
    out = {}
    for value in distinct[np.argsort(first)].tolist():
        members = np.flatnonzero(group == value)
        schema, table = batch.tables[int(batch.table[members[0]])]
        date = dt.date(1970, 1, 1) + dt.timedelta(days=int(day[members[0]]))
        out[Partition(schema, table, date)] = members
    return out


_EMPTY_LISTS = pa.array([], pa.string())


def batch_parquet_table(batch: DecodedBatch, members: Ints) -> pa.Table:
    """:func:`parquet_table` of the events ``members`` of a decoded batch (one partition)."""
    shapes, first = np.unique(batch.shape[members], return_index=True)
    columns: dict[str, Column] = {}
    for s in shapes[np.argsort(first)].tolist():
        for column in batch.shapes[s]:
            columns.setdefault(column.name, column)
    schema = contract.parquet_schema(list(columns.values()))
    table = int(batch.table[members[0]])
    rows = pa.array(batch.row[members])
    arrays = [
        pa.array(contract.OPS).take(pa.array(batch.op[members])),
        pa.array(batch.lsn[members]),
        pa.array(batch.seq[members]),
        pa.array(batch.xid[members], mask=batch.xid_null[members]),
        pa.array(batch.commit_micros[members], pa.timestamp("us", tz="UTC")),
        pa.array(batch.snapshot[members]),
        pa.ListArray.from_arrays(pa.array(np.zeros(len(members) + 1, np.int32)), _EMPTY_LISTS),
        *(batch.values[table, name].take(rows) for name in columns),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _parquet_bytes(table: pa.Table, batch: BatchId | None = None) -> bytes:
    if batch is not None and batch.read is not None:
        times = {"capture_read": batch.captured, "kinesis_accepted": batch.accepted,
                 "processor_read": batch.read, "file_written": time.time()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               stages.METADATA_KEY: json.dumps(times)})
    return parquet_bytes(table)


@dataclass(frozen=True)
class PartitionFiles:
    """One partition of a batch: its event count, raw Avro file and processed Parquet file."""

    partition: Partition
    events: int
    avro: bytes
    parquet: bytes


def batch_files(events: DecodedBatch | Sequence[TypedEvent],
                raw_key: Callable[[Partition], str], batch: BatchId | None = None) -> list[PartitionFiles]:
    """The files of a batch's events, decoded whole or event by event; ``raw_key`` names the raw
    file of a partition (its sync marker derives from the key); the processed files carry
    ``batch``'s stage times."""
    if isinstance(events, DecodedBatch):
        data = memoryview(events.buf)
        out = []
        for partition, members in batch_partitions(events).items():
            start, end = events.body_start[members], events.body_end[members]
            bodies = events.buf if len(members) == len(events) else b"".join(
                [data[s:e] for s, e in zip(start.tolist(), end.tolist(), strict=True)])
            out.append(PartitionFiles(partition, len(members),
                                      avro_container(bodies, end - start, raw_key(partition)),
                                      _parquet_bytes(batch_parquet_table(events, members), batch)))
        return out
    return [PartitionFiles(partition, len(group), avro_file([e.record for e in group], raw_key(partition)),
                           _parquet_bytes(parquet_table(group), batch))
            for partition, group in partitions(events).items()]

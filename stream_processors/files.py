"""The files a batch produces, as bytes, and their deterministic object keys. No I/O.

A batch is named by its shard and its first and last Kinesis sequence numbers, so delivering the
same batch again yields the same keys and the same bytes: a retry or replay duplicates nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from totes_cdc import contract
from totes_cdc.contract import Column

from .records import TypedEvent, row_image


@dataclass(frozen=True)
class BatchId:
    """A delivered batch: one shard, a range of sequence numbers."""

    shard_id: str
    first: str
    last: str

    @property
    def name(self) -> str:
        return f"{self.shard_id}-{self.first}-{self.last}"


@dataclass(frozen=True)
class Partition:
    """Events of one table committed on one (UTC) date: one raw file and one processed file."""

    schema: str
    table: str
    date: dt.date

    def key(self, prefix: str, batch: BatchId, suffix: str) -> str:
        return f"{prefix}{self.schema}.{self.table}/date={self.date.isoformat()}/{batch.name}{suffix}"


def partitions(events: Iterable[TypedEvent]) -> dict[Partition, list[TypedEvent]]:
    """Events grouped by table and commit date, each group in arrival order."""
    groups: dict[Partition, list[TypedEvent]] = {}
    for item in events:
        event = item.event
        commit_date = event.commit_ts.astimezone(dt.UTC).date()
        groups.setdefault(Partition(event.schema, event.table, commit_date), []).append(item)
    return groups


def avro_file(records: Sequence[dict[str, Any]], key: str) -> bytes:
    """An Avro object container file of the records, byte-identical for the same key and records."""
    buf = io.BytesIO()
    sync_marker = hashlib.md5(key.encode(), usedforsecurity=False).digest()
    fastavro.writer(buf, contract.PARSED_SCHEMA, records, codec="deflate", sync_marker=sync_marker)
    return buf.getvalue()


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
    buf = io.BytesIO()
    pq.write_table(parquet_table(events), buf)
    return buf.getvalue()

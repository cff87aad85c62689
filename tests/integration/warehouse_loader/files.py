"""Processed Parquet files for tests and benchmarks, written by the stream processor's own writer.

Columns and types come from a real totesys database's catalog; values are given in PostgreSQL's
text form, as change events carry them, and typed as the processor types them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from stream_processors.files import parquet_table
from stream_processors.records import TypedEvent, typed_row
from totes_cdc.contract import OP_DELETE, ChangeEvent, Column, parquet_schema, snapshot_seq
from totes_cdc.lakefiles import parquet_bytes as lake_parquet_bytes
from totes_cdc.snapshot_marker import SnapshotMarker, marker_parquet

COMMIT_TS = dt.datetime(2024, 11, 15, 12, 0, tzinfo=dt.UTC)


def source_columns(conn: Any, table: str) -> tuple[Column, ...]:
    """The columns of ``public.<table>`` with their format_type() names and key flags."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
            "COALESCE(a.attnum = ANY(i.indkey), false) FROM pg_attribute a "
            "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", (f"public.{table}",))
        return tuple(Column(name, typ, key) for name, typ, key in cur.fetchall())


def event(op: str, lsn: int, seq: int, values: Mapping[str, str | None] | None = None,
          unchanged: Sequence[str] = (), commit_ts: dt.datetime = COMMIT_TS) -> dict[str, Any]:
    """One processed row: the meta fields, then column values in text form (None = null)."""
    return {"_op": op, "_lsn": lsn, "_seq": seq, "_xid": None, "_commit_ts": commit_ts,
            "_snapshot": op == "r", "_unchanged": list(unchanged), **(values or {})}


def processed_event(columns: Sequence[Column], row: Mapping[str, Any]) -> TypedEvent:
    """The change event a processed row (see :func:`event`) stands for, typed as the processor
    types it: the values are the old image of a delete and the new image of anything else.
    Values of names not among ``columns`` are left out (a test writes a file short of a column so)."""
    names = {c.name for c in columns}
    values = {name: value for name, value in row.items() if name in names}
    deleted = row["_op"] == OP_DELETE
    change = ChangeEvent(row["_op"], "public", "", row["_lsn"], row["_seq"], row["_commit_ts"],
                         tuple(columns), before=values if deleted else None,
                         after=None if deleted else values, xid=row["_xid"],
                         snapshot=row["_snapshot"], unchanged=tuple(row["_unchanged"]))
    return TypedEvent({}, change, typed_row(change))


def parquet_bytes(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]],
                  metadata: Mapping[bytes, bytes] | None = None) -> bytes:
    """A processed Parquet file of ``rows`` (see :func:`event`) for a table with ``columns``, with
    key-value ``metadata``, written by the stream processor's own writer."""
    table = (parquet_table([processed_event(columns, row) for row in rows]) if rows
             else parquet_schema(columns).empty_table())
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    return lake_parquet_bytes(table)


def object_key(table: str, first: int, last: int, shard: str = "shardId-000000000000") -> str:
    return f"processed/public.{table}/date=2024-11-15/{shard}-{first}-{last}.parquet"


def snapshot_key(table: str, lsn: int, name: str) -> str:
    """A snapshot read's processed key: unique per read position, as capture names them."""
    return f"processed/public.{table}/date=2024-11-15/snapshot-{lsn}-{table}-{name}.parquet"


def snapshot_files(conn: Any, tables: Sequence[str], lsn: int = 1000, file_rows: int = 0,
                   markers: bool = False, resync: bool = False) -> dict[str, bytes]:
    """A snapshot of ``tables`` in ``conn`` as processed files: op r, seq = snapshot_seq(ordinal by
    key), as capture numbers snapshot reads; files of ``file_rows`` reads (0: one per table), then
    with ``markers`` each table's completion marker."""
    files = {}
    for table in tables:
        columns = source_columns(conn, table)
        names = [c.name for c in columns]
        keys = [c.name for c in columns if c.key]
        with conn.cursor() as cur:
            cur.execute("SELECT {} FROM public.{} ORDER BY {}".format(  # nosec B608
                ", ".join(f'"{n}"::text' for n in names), table, ", ".join(keys)))
            rows = [event("r", lsn, snapshot_seq(i), dict(zip(names, values, strict=True)))
                    for i, values in enumerate(cur.fetchall(), start=1)]
        conn.commit()
        size = file_rows or max(len(rows), 1)
        listed = []
        for first in range(0, len(rows), size):
            key = snapshot_key(table, lsn, f"{first + 1}-{first + len(rows[first:first + size])}")
            files[key] = parquet_bytes(columns, rows[first:first + size])
            listed.append(key)
        if markers:
            marker = SnapshotMarker("public", table, lsn, tuple(listed), len(rows), resync)
            files[snapshot_key(table, lsn, "done")] = marker_parquet(marker, columns)
    return files

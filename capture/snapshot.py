"""The consistent initial snapshot, resumable, and the stream filter that makes resuming exact.

First start: the slot is created with an exported snapshot at its consistent point C1, and every
table is read in that snapshot, in primary-key order, in chunks; each chunk's events are flushed
to the stream before the progress (last key, rows) is saved. Rows become 'r' events with
lsn = C1 and seq = contract.snapshot_seq(the row's ordinal in its table), negative, so a read sorts
before every change committed at C1 (a commit record may start exactly there). Then the slot
streams from C1: snapshot plus stream is exactly the source, with no gap and no double count.

Resume after a crash mid-snapshot: the slot is kept (it retains every change since C1). A temporary
slot exports a fresh snapshot at C2, and only the rest is read there: unfinished tables, from the
row after the last key saved (their events get lsn = C2). Streaming the slot from C1 then keeps
every change to rows read at C1, and drops the inserts and updates with commit LSN < C2 of rows
read at C2 (the C2 read already shows them), but never a delete: :class:`ResumeFilter`. A table
without a primary key cannot be read by key: it is read whole again, so a crash in the middle of
one repeats its rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from capture import source
from capture.errors import Stopped
from capture.state import Key, SnapshotState, StateStore, TableProgress
from totes_cdc.contract import OP_DELETE, OP_SNAPSHOT, ChangeEvent, Column, snapshot_seq

log = logging.getLogger(__name__)

_INTEGER_TYPES = {"smallint", "integer", "bigint"}


def _sort_value(type_name: str, text: str | None) -> Any:
    """A key value in the order PostgreSQL sorts it (integers and numerics by value, text as is)."""
    if text is None:
        return ""
    if type_name in _INTEGER_TYPES:
        return int(text)
    if type_name.startswith("numeric"):
        return decimal.Decimal(text)
    return text


class ResumeFilter:
    """Drops streamed changes that a resumed snapshot read already includes, and nothing else.

    A change with commit LSN below the snapshot that read its row is in that read, so the stream
    drops it. What the read cannot show is a row that is gone, and that row may already be on the
    stream (read at C1 in the chunk whose progress was not saved, or streamed before a full
    re-snapshot after lost state): a delete is therefore always kept, and an update whose old row
    leaves the read range becomes the delete of that old row. A consumer may so receive the delete
    of a row it never saw; ordered by position, it ends equal to the source.
    """

    def __init__(self, state: SnapshotState) -> None:
        self._tables = {name: t for name, t in state.tables.items() if t.segments}
        self._until = max((lsn for t in self._tables.values() for _, lsn in t.segments), default=0)

    def apply(self, event: ChangeEvent) -> ChangeEvent | None:
        """The event to send: itself, None when the snapshot already holds it, or (an update whose
        new row the snapshot holds, from another old row) the delete of its old row."""
        if event.lsn >= self._until or event.after is None:  # deletes and truncates stay
            return event
        progress = self._tables.get(f"{event.schema}.{event.table}")
        if progress is None or event.lsn >= self._read_at(progress, event.after):
            return event
        old = event.before
        if old is None or (progress.key_columns and all(
                old.get(c) == event.after.get(c) for c in progress.key_columns)):
            return None  # the same row: the read shows its new values
        # The old row is another key, or (a table without key) the old image: it is gone.
        return dataclasses.replace(event, op=OP_DELETE, after=None, unchanged=())

    def _read_at(self, progress: TableProgress, image: Mapping[str, str | None]) -> int:
        """LSN of the snapshot that read the row with this image's key: the last segment whose range
        holds it (a segment from no key, as after a crash before any progress was saved, holds all)."""
        key = self._sortable(progress, [image.get(c) for c in progress.key_columns])
        read_at = progress.segments[0][1]
        for after_key, lsn in progress.segments[1:]:
            if after_key is None or key > self._sortable(progress, after_key):
                read_at = lsn
        return read_at

    @staticmethod
    def _sortable(progress: TableProgress, key: Key) -> tuple[Any, ...]:
        return tuple(_sort_value(t, v) for t, v in zip(progress.key_types, key, strict=True))


def read_event(schema: str, table: str, columns: tuple[Column, ...], *, lsn: int, ordinal: int,
               taken_at: dt.datetime, row: Mapping[str, str | None]) -> ChangeEvent:
    """The snapshot read of ``row``, the ``ordinal``-th row of its table, in the snapshot at ``lsn``:
    its seq sorts it before every change committed at ``lsn`` (see contract.SEQ_RANGE)."""
    return ChangeEvent(OP_SNAPSHOT, schema, table, lsn, snapshot_seq(ordinal), taken_at, columns,
                       after=row, snapshot=True)


Emit = Callable[[ChangeEvent, str], None]


class SnapshotReader:
    """Reads the unfinished tables of ``state`` in one exported snapshot taken at ``lsn``."""

    def __init__(self, dsn: str, store: StateStore, emit: Emit, flush: Callable[[], None], *,
                 stop: threading.Event, chunk_rows: int = 10_000) -> None:
        self._dsn = dsn
        self._store = store
        self._emit = emit
        self._flush = flush
        self._stop = stop
        self._chunk_rows = chunk_rows

    def read(self, state: SnapshotState, tables: Sequence[str], snapshot_name: str, lsn: int) -> None:
        conn = source.connect(self._dsn)
        try:
            conn.autocommit = False
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
                cur.execute("SELECT now()")
                taken_at = cur.fetchone()[0]
                for table in tables:
                    if not state.tables.setdefault(table, TableProgress()).done:
                        self._read_table(conn, cur, state, table, lsn=lsn, taken_at=taken_at)
        finally:
            conn.close()

    def _read_table(self, conn: Any, cur: Any, state: SnapshotState, table: str, *,
                    lsn: int, taken_at: dt.datetime) -> None:
        schema, name = source.qualified(table)
        progress = state.tables[table]
        described, key_columns = source.table_columns(cur, table)
        # Values exactly as the type's output function prints them (what pgoutput sends).
        # Without a key, one pass through a server-side cursor (memory stays bounded by a chunk).
        reader = conn.cursor() if key_columns is not None else conn.cursor(name=f"snapshot_{name}"[:60])
        psycopg2.extensions.register_type(psycopg2.extensions.new_type(
            tuple({oid for _, _, oid in described}), "TOTES_CDC_TEXT", lambda value, _cur: value), reader)
        key_set = set(key_columns or ())
        columns = tuple(Column(n, t, n in key_set) for n, t, _ in described)
        names = [c.name for c in columns]
        types = {c.name: c.type for c in columns}
        if key_columns is None:
            log.warning("table %s has no primary key: its snapshot is read whole, in one pass", table)
            progress.rows, progress.last_key = 0, None
            progress.segments = [(None, lsn)]
        else:
            progress.segments.append((progress.last_key, lsn))
        progress.key_columns = key_columns or []
        progress.key_types = [types[k] for k in progress.key_columns]
        after = progress.last_key is not None
        cur.execute(self._query(schema, name, names, key_columns, after, count=True), progress.last_key or [])
        progress.total = progress.rows + cur.fetchone()[0]
        self._store.save(state)
        log.info("snapshot of %s at LSN %s: %d of %d rows done, reading the rest",
                 table, source.format_lsn(lsn), progress.rows, progress.total)
        key_positions = [names.index(k) for k in progress.key_columns]  # key order, for the next chunk
        if key_columns is None:
            reader.execute(self._query(schema, name, names, None, after=False))
        while True:
            if self._stop.is_set():
                raise Stopped("stopped during the snapshot")
            if key_columns is not None:
                reader.execute(self._query(schema, name, names, key_columns, progress.last_key is not None),
                               [*(progress.last_key or []), self._chunk_rows])
            rows = reader.fetchmany(self._chunk_rows)
            for row in rows:
                progress.rows += 1
                event = read_event(schema, name, columns, lsn=lsn, ordinal=progress.rows,
                                   taken_at=taken_at, row=dict(zip(names, row, strict=True)))
                # The contract's key (column order), as the stream's events have it: one shard per row.
                self._emit(event, event.partition_key)
            if rows and key_columns is not None:
                progress.last_key = [rows[-1][i] for i in key_positions]
            done = len(rows) < self._chunk_rows
            self._flush()  # the stream has this chunk before its progress is saved
            if key_columns is not None or done:
                progress.done = done
                self._store.save(state)
            log.info("snapshot of %s: %d/%d rows", table, progress.rows, progress.total)
            if done:
                reader.close()
                return

    @staticmethod
    def _query(schema: str, table: str, names: list[str], key: list[str] | None, after: bool, *,
               count: bool = False) -> sql.Composed:
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in key or ())
        where = sql.SQL("WHERE ({}) > ({})").format(
            keys, sql.SQL(", ").join(sql.Placeholder() for _ in key or ())) if after else sql.SQL("")
        if count:
            return sql.SQL("SELECT count(*) FROM {} {}").format(sql.Identifier(schema, table), where)
        order = sql.SQL("ORDER BY {} LIMIT %s").format(keys) if key else sql.SQL("")
        return sql.SQL("SELECT {} FROM {} {} {}").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names), sql.Identifier(schema, table), where, order)

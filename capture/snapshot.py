"""The consistent snapshot of the captured tables, straight to the lake, in parallel ranges.

Kinesis carries only changes. A snapshot reads each table in one exported snapshot, taken at LSN C
(the slot's consistent point for the initial snapshot; a temporary slot's for a resumed one or a
resync), and writes its rows to the raw zone (Avro container of ``r`` events) and the processed
zone (Parquet), under the same keys and conditional puts as the stream processor's files, so
replay and the loader treat them like any other file.

- **Ranges.** A table is split in ranges of its heap blocks (``ctid``, read by TID range scans)
  of about ``file_rows`` rows (by the table's rows per block: its statistics, or counted in its
  first blocks), each read by one of ``workers`` connections that import the exported snapshot,
  with one ``COPY (SELECT ...) TO STDOUT`` (text format) into memory, then written as one file,
  built column by column (totes_cdc.snapshot_files): memory is bounded by a range per worker,
  whatever the table's size.
- **Positions.** A read has lsn = C and seq = snapshot_seq(ordinal): every read sorts before every
  change committed at C. Ordinals are unique within a table's read at C: a range starting at block
  b numbers its rows from b x (most tuples a heap page can hold) + 1, in scan order.
- **Resumable by range.** A range is saved as done once its file is in the lake. After a crash
  the exported snapshot is gone: unfinished ranges are read again in a fresh snapshot at C2 (their
  rows at (C2, ...)); the files of a range read at C but not saved stay in the lake (harmless: every
  change after C is on the stream, and position order gives the current state either way), and a
  range whose raw file is in the lake without its processed twin is completed from the raw file
  (see _adopt), so the loader is told of every read the raw zone holds.
- **Completion marker.** Once every range of a table is in the lake, one more processed object,
  totes_cdc.snapshot_marker: the loader then tombstones what the read did not see.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg2.errors
import pyarrow as pa
from psycopg2 import sql

from capture import copytext, source
from capture.errors import CaptureError, Stopped
from capture.progress import ProgressTracker
from capture.state import BlockRange, RangeRead, SnapshotState, StateStore, TableProgress
from totes_cdc import contract
from totes_cdc.contract import Column, ContractError
from totes_cdc.errors import TotesError, first_line
from totes_cdc.lakefiles import (
    AVRO_CONTENT_TYPE,
    PARQUET_CONTENT_TYPE,
    LakeLocation,
    ObjectStore,
    Partition,
    avro_events,
    parquet_bytes,
)
from totes_cdc.snapshot_files import load_kernels, processed_table, raw_container, record_bodies
from totes_cdc.snapshot_marker import NAME_PREFIX, SnapshotMarker, marker_parquet

log = logging.getLogger(__name__)

_PAGE_HEADER, _LINE_POINTER, _TUPLE_HEADER = 24, 4, 24  # bytes (the tuple header MAXALIGNed)
_SAMPLE_BLOCKS = 128  # counted to size the ranges of a table the server has no statistics for
WAIT_REPORT_SECONDS = 10.0  # how often a slot creation that waits says what for


@dataclass(frozen=True)
class RangeFile:
    """Names the file of a range read: ``snapshot-<LSN>-<range>``."""

    lsn: int
    range: int

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.lsn:016X}-{self.range:06d}"


@dataclass(frozen=True)
class MarkerName:
    lsn: int

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.lsn:016X}-complete"


@dataclass(frozen=True)
class _Table:
    """A table as one read sees it."""

    name: str  # schema.table
    schema: str
    table: str
    columns: tuple[Column, ...]


def plan_ranges(blocks: int, rows_per_block: float, range_rows: int) -> list[BlockRange]:
    """Ranges of about ``range_rows`` rows covering ``blocks`` heap blocks; the last one open, so
    rows in blocks added since the size was read are read too."""
    step = max(1, int(range_rows / max(rows_per_block, 1.0)))
    starts = list(range(0, max(blocks, 1), step))
    return [(first, starts[i + 1] if i + 1 < len(starts) else None) for i, first in enumerate(starts)]


@contextlib.contextmanager
def _present(table: str) -> Iterator[None]:
    """Reading ``table``: dropped since the session checked it (no lock is held on a table until a
    worker's transaction reads it), it is the error a restart would give, a setting to fix (exit 2),
    not a crash."""
    try:
        yield
    except psycopg2.errors.UndefinedTable as exc:
        raise source.tables_not_found([table]) from exc


def _processed_file(table: _Table, *, lsn: int, seqs: npt.NDArray[np.int64], taken_at: dt.datetime,
                    values: Sequence[pa.Array]) -> bytes:
    """The processed zone's Parquet of a range's reads (CaptureError for a value its column's
    type cannot hold)."""
    try:
        return parquet_bytes(processed_table(table.columns, lsn=lsn, seqs=seqs, taken_at=taken_at,
                                             values=values))
    except ContractError as exc:
        raise CaptureError(f"snapshot of {table.name}: {exc}") from exc


class LakeSnapshot:
    """Reads the unfinished tables of a :class:`SnapshotState` in one exported snapshot, into the lake."""

    def __init__(self, dsn: str, lake: LakeLocation, objects: ObjectStore, store: StateStore,
                 progress: ProgressTracker, *, stop: threading.Event, workers: int = 4,
                 file_rows: int = 100_000) -> None:
        self._dsn = dsn
        self._lake = lake
        self._objects = objects
        self._store = store
        self._progress = progress
        self._stop = stop
        self._workers = workers
        self._file_rows = file_rows
        self._lock = threading.Lock()  # the state and its store, shared by the workers

    def take(self, state: SnapshotState, tables: Sequence[str], slot: str, *, temporary: bool,
             on_slot: Callable[[int], None]) -> None:
        """Create ``slot`` with an exported snapshot (``on_slot`` gets its LSN), then :meth:`read`
        in it. The exported snapshot lives as long as the slot's connection stays idle."""
        load_kernels()
        copytext.load_kernels()
        repl = source.connect_replication(self._dsn)
        try:
            log.info("creating slot %s with an exported snapshot (it waits for the transactions "
                     "open on the source to end)", slot)
            with self._saying_what_it_waits_for(slot):
                lsn, snapshot_name = source.create_slot(repl, slot, temporary=temporary)
            on_slot(lsn)
            self.read(state, tables, snapshot_name, lsn)
        finally:
            repl.close()  # also drops a temporary slot

    @contextlib.contextmanager
    def _saying_what_it_waits_for(self, slot: str) -> Iterator[None]:
        """While the slot is being created, log every WAIT_REPORT_SECONDS the transaction it
        waits for: a long transaction on the source holds a snapshot back with no other sign."""
        done = threading.Event()

        def watch() -> None:
            waited = 0.0
            while not done.wait(WAIT_REPORT_SECONDS):
                waited += WAIT_REPORT_SECONDS
                try:
                    conn = source.connect(self._dsn)
                    try:
                        oldest = source.Source(conn).oldest_open_transaction()
                    finally:
                        conn.close()
                except TotesError as exc:
                    oldest = f"cannot tell ({first_line(exc)})"
                if not done.is_set():
                    log.warning("slot %s not created after %.0f s: it waits for the transactions open "
                                "on the source to end; the oldest: %s", slot, waited, oldest)

        watcher = threading.Thread(target=watch, name=f"{slot} creation", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def read(self, state: SnapshotState, tables: Sequence[str], snapshot_name: str, lsn: int) -> None:
        """Read every range of ``tables`` not yet in the lake, at ``lsn``; write the markers."""
        conn = self._snapshot_connection(snapshot_name)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT now(), current_setting('block_size')::int")
                taken_at, block_size = cur.fetchone()
                described = {}
                for t in tables:
                    if not state.tables.setdefault(t, TableProgress()).complete:
                        with _present(t):
                            described[t] = self._describe(cur, state, t, block_size)
        finally:
            conn.close()
        for table in described.values():
            for earlier in state.reads:
                self._adopt(state, table, *earlier)
        state.reads = [(lsn, taken_at.astimezone(dt.UTC).date().isoformat())]
        self._store.save(state)
        work: queue.SimpleQueue[tuple[_Table, int]] = queue.SimpleQueue()
        for table in described.values():
            progress = state.tables[table.name]
            # A resumed read's rows saved before count as done, not in the rate.
            self._progress.start(table.name, progress.estimate, done=progress.rows)
            todo = [i for i in range(len(progress.ranges)) if i not in progress.done]
            log.info("snapshot of %s at %s: %d of %d ranges to read", table.name, source.format_lsn(lsn),
                     len(todo), len(progress.ranges))
            for index in todo:
                work.put((table, index))
            if not todo:
                self._complete(state, table, taken_at)
        tuples_per_page = (block_size - _PAGE_HEADER) // (_LINE_POINTER + _TUPLE_HEADER)
        failed = threading.Event()

        def worker() -> None:
            conn = self._snapshot_connection(snapshot_name)
            try:
                while not failed.is_set():
                    try:
                        table, index = work.get_nowait()
                    except queue.Empty:
                        return
                    blocks = state.tables[table.name].ranges[index]  # planned before the workers start
                    read = self._read_range(conn, table, index, blocks, lsn=lsn, taken_at=taken_at,
                                            first_ordinal=blocks[0] * tuples_per_page)
                    self._range_done(state, table, index, read, taken_at)
            except BaseException:
                failed.set()
                raise
            finally:
                conn.close()

        count = min(self._workers, max(work.qsize(), 1))
        with ThreadPoolExecutor(count, thread_name_prefix="snapshot") as pool:
            futures = [pool.submit(worker) for _ in range(count)]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            raise min(errors, key=lambda e: isinstance(e, Stopped))  # the cause, not a stopped worker

    def _snapshot_connection(self, snapshot_name: str) -> Any:
        conn = source.connect(self._dsn)
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
        return conn

    def _describe(self, cur: Any, state: SnapshotState, name: str, block_size: int) -> _Table:
        """The table's columns in this snapshot; its ranges, planned at its first read."""
        schema, table = source.qualified(name)
        described, key_columns = source.table_columns(cur, name)
        if key_columns is None:
            log.warning("table %s has no primary key: its events are keyed on the replica identity", name)
        keys = set(key_columns or ())
        progress = state.tables[name]
        if not progress.ranges:
            ident = sql.Identifier(schema, table).as_string(cur)
            cur.execute("SELECT pg_relation_size(%s::regclass), relpages, reltuples FROM pg_class "
                        "WHERE oid = %s::regclass", (ident, ident))
            size, pages, tuples = cur.fetchone()
            blocks = size // block_size
            if pages > 0 and tuples > 0:
                per_block = tuples / pages
            else:  # never analysed: count the rows of its first blocks (a TID range scan)
                sample = min(max(blocks, 1), _SAMPLE_BLOCKS)
                cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE ctid < {}::tid").format(
                    sql.Identifier(schema, table), sql.Literal(f"({sample},0)")))
                per_block = cur.fetchone()[0] / sample
            progress.ranges = plan_ranges(blocks, per_block, self._file_rows)
            progress.estimate = int(tuples) if tuples >= 0 else None
        return _Table(name, schema, table, tuple(Column(n, t, n in keys) for n, t, _ in described))

    def _read_range(self, conn: Any, table: _Table, index: int, blocks: BlockRange, *, lsn: int,
                    taken_at: dt.datetime, first_ordinal: int) -> RangeRead:
        first_block, end_block = blocks
        names = [c.name for c in table.columns]
        where = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({first_block},0)"))
        if end_block is not None:
            where = sql.SQL("{} AND ctid < {}::tid").format(where, sql.Literal(f"({end_block},0)"))
        copy = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names),
            sql.Identifier(table.schema, table.table), where)
        buf = io.BytesIO()  # psycopg2 hands each row to BytesIO.write, itself C: no Python code per row
        with _present(table.name), conn.cursor() as cur:
            cur.copy_expert(copy.as_string(conn), buf)
        if self._stop.is_set():
            raise Stopped("stopped during the snapshot")
        if not buf.getbuffer().nbytes:  # an empty range (Arrow's reader refuses empty input)
            return RangeRead(lsn, 0, [])
        values = copytext.text_columns(pa.py_buffer(buf.getbuffer()), names)
        del buf  # the text, once in columns: a worker holds one copy of its range
        rows = len(values[0]) if values else 0
        if not rows:
            return RangeRead(lsn, 0, [])
        ordinals = np.arange(first_ordinal + 1, first_ordinal + rows + 1, dtype=np.int64)
        contract.snapshot_seq(int(ordinals[-1]))  # ContractError past the contract's range
        seqs = ordinals - contract.SEQ_RANGE
        partition = Partition(table.schema, table.table, taken_at.astimezone(dt.UTC).date())
        raw_key = partition.key(self._lake.raw_prefix, RangeFile(lsn, index), ".avro")
        raw = raw_container(record_bodies(table.schema, table.table, table.columns, lsn=lsn, seqs=seqs,
                                          taken_at=taken_at, values=values), raw_key)
        parquet = _processed_file(table, lsn=lsn, seqs=seqs, taken_at=taken_at, values=values)
        key = partition.key(self._lake.processed_prefix, RangeFile(lsn, index), self._lake.processed_suffix)
        # Raw first: whatever the loader is told of is already in the raw zone.
        self._objects.put_new(self._lake.raw_bucket, raw_key, raw, AVRO_CONTENT_TYPE)
        self._objects.put_new(self._lake.processed_bucket, key, parquet, PARQUET_CONTENT_TYPE)
        self._progress.advance(table.name, rows)
        return RangeRead(lsn, rows, [key])

    def _adopt(self, state: SnapshotState, table: _Table, lsn: int, day: str) -> None:
        """Save as done the ranges an earlier read at ``lsn`` put in the raw zone without saving
        them (stopped between the raw put, the processed put and the save), writing their
        processed file from the raw one when it is missing: every raw file has its processed twin,
        and a row deleted after ``lsn`` keeps the version that read it."""
        progress = state.tables[table.name]
        partition = Partition(table.schema, table.table, dt.date.fromisoformat(day))
        prefix = partition.key(self._lake.raw_prefix, RangeFile(lsn, 0), "")[:-len("000000")]
        for raw_key in self._objects.keys(self._lake.raw_bucket, prefix):
            index = int(raw_key[len(prefix):].split(".")[0])
            if index in progress.done:
                continue
            events = avro_events(self._objects.get(self._lake.raw_bucket, raw_key))
            if [(c.name, c.type) for c in events[0].columns] != [(c.name, c.type) for c in table.columns]:
                log.warning("snapshot of %s: %s has other columns than the table now: read again",
                            table.name, raw_key)
                continue
            key = partition.key(self._lake.processed_prefix, RangeFile(lsn, index),
                                self._lake.processed_suffix)
            values = [pa.array([(e.after or {}).get(c.name) for e in events], pa.string())
                      for c in table.columns]
            parquet = _processed_file(table, lsn=lsn, seqs=np.array([e.seq for e in events], np.int64),
                                      taken_at=events[0].commit_ts, values=values)
            written = self._objects.put_new(self._lake.processed_bucket, key, parquet, PARQUET_CONTENT_TYPE)
            progress.done[index] = RangeRead(lsn, len(events), [key])
            log.info("snapshot of %s: range %d, read at %s and in the raw zone unsaved, saved as done "
                     "(its processed file %s)", table.name, index, source.format_lsn(lsn),
                     "written from the raw one" if written else "was in the lake")

    def _range_done(self, state: SnapshotState, table: _Table, index: int, read: RangeRead,
                    taken_at: dt.datetime) -> None:
        with self._lock:
            progress = state.tables[table.name]
            progress.done[index] = read
            self._store.save(state)
            if len(progress.done) == len(progress.ranges):
                self._complete(state, table, taken_at)

    def _complete(self, state: SnapshotState, table: _Table, taken_at: dt.datetime) -> None:
        """Every range of the table is in the lake: write its marker (then it is complete)."""
        progress = state.tables[table.name]
        reads = [progress.done[i] for i in range(len(progress.ranges))]
        marker = SnapshotMarker(table.schema, table.table, min(r.lsn for r in reads),
                                tuple(f for r in reads for f in r.files), progress.rows, state.resync)
        key = Partition(table.schema, table.table, taken_at.astimezone(dt.UTC).date()).key(
            self._lake.processed_prefix, MarkerName(marker.lsn), self._lake.processed_suffix)
        self._objects.put_new(self._lake.processed_bucket, key, marker_parquet(marker, table.columns),
                              PARQUET_CONTENT_TYPE)
        progress.marker = key
        self._store.save(state)
        self._progress.finish(table.name)
        log.info("snapshot of %s complete: %d rows in %d files", table.name, marker.rows, len(marker.files))

"""A model of totesys source histories, of the processed files they become, and of the warehouse.

Pure: nothing here touches a database. A :class:`History` is the state of a few totesys tables at
a snapshot position C, then transactions committed at C or later (inserts, updates with
TOAST-unchanged columns, deletes, truncates, primary-key changes). From it:

- :func:`change_events`: the contract's change events, as capture emits them: snapshot reads at C,
  then each transaction's changes at its commit LSN, numbered from 1 (reads at C sort before
  changes at C: ``contract.snapshot_seq``);
- :func:`expected`: the warehouse the loader must converge to, whatever order the files arrive in:
  the mirror (every row ever seen: its latest version, deleted or not, with its last values),
  the dimensions, the current facts and the fact history (one version per change event, a
  tombstone with the row's last values per deletion);
- :func:`processed_files`: the events cut into processed Parquet files the way the stream processor
  cuts them: partition key -> shard by Kinesis' hash-key ranges, per-shard batches of KPL records,
  one file per table and commit date, parsed and written by the processor's own functions.

Ops are interpreted leniently (an update of a missing row inserts it, a delete of a missing row
does nothing), so every sequence Hypothesis draws or shrinks to is a valid history.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from capture.producer import Producer, Shard
from stream_processors.columnar import parse_batch
from stream_processors.config import ProcessorConfig
from stream_processors.files import BatchId
from stream_processors.store import ObjectStore, write_batch
from tests.integration.warehouse_loader.files import event as processed_row
from tests.integration.warehouse_loader.files import parquet_bytes, snapshot_key
from totes_cdc import contract, kpl
from totes_cdc.contract import GHOST_SEQ, ChangeEvent, Column
from totes_cdc.settings import settings
from totes_cdc.snapshot_marker import SnapshotMarker, marker_parquet
from warehouse_loader.derivation import FACTS_BY_SOURCE, UNKNOWN_CURRENCY, currency_name

SCHEMA = "public"
LIVE = (contract.OP_SNAPSHOT, contract.OP_INSERT, contract.OP_UPDATE)
TABLES = ("address", "counterparty", "currency", "department", "staff", "sales_order", "payment")
KEY_SPACE = 4  # keys 1..4, and foreign keys into the same range, so rows meet and joins match
SNAPSHOT_LSN = 0x1000
LSN_STEP = 0x100
SNAPSHOT_TS = dt.datetime(2024, 11, 15, 21, 0, tzinfo=dt.UTC)  # a few hours before midnight
RESUME_SPLIT = KEY_SPACE // 2  # a resumed snapshot's ranges done at C: the rows of keys up to it
CURRENCY_CODES = ("GBP", "USD", "EUR", "gbp", "ZZZ")  # lower case and a code ISO 4217 lacks
TOASTABLE = ("text", "character varying")


# --- the history ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One source statement on one row (or, for a truncate, the table)."""

    kind: str  # insert, update, delete, truncate, rekey (the primary key changes to new_key)
    table: str
    key: int = 1
    seeds: tuple[int | None, ...] = ()  # per non-key column: the new value's seed; None keeps it
    toast: tuple[bool, ...] = ()  # per non-key column: a kept text value is sent TOAST-unchanged
    new_key: int = 1


@dataclass(frozen=True)
class Transaction:
    ops: tuple[Op, ...]
    hours: int = 0  # after the previous commit: transactions cross midnight, so dates differ


@dataclass(frozen=True)
class History:
    initial: tuple[Op, ...]  # committed before the snapshot: what the snapshot reads
    transactions: tuple[Transaction, ...]
    commit_at_snapshot: bool = False  # the first transaction commits at the snapshot's LSN
    resync: tuple[str, ...] = ()  # tables read again after the transactions
    lost: tuple[Op, ...] = ()  # deletes of resynced tables' rows while nothing listened: no event
    rounds: int = 1  # resyncs one after the other; lost delete i comes before round i % rounds
    # a resync killed before its marker, first: its files of the first rows it read of each table
    # are in the lake, and it is run again (the rounds)
    abandoned: int = 0
    # capture killed during the snapshot and started again after this many transactions: the rows
    # of keys up to RESUME_SPLIT were read at C, the rest are read at C2, and the marker lists both
    resumed: int | None = None


# --- values --------------------------------------------------------------------------------------

_BASE_TS = dt.datetime(2024, 11, 14, 9, 30)


def value_text(column: Column, seed: int) -> str | None:
    """A column value in PostgreSQL's text form (what change events carry), from a seed."""
    name, pg_type = column.name, column.type
    if pg_type == "integer":
        return str(1 + seed % KEY_SPACE) if name.endswith("_id") else str(seed)
    if pg_type.startswith("numeric"):
        return f"{seed}.{seed * 7 % 100:02d}"
    if pg_type.startswith("timestamp"):
        ts = _BASE_TS + dt.timedelta(hours=5 * seed, milliseconds=seed * 7 % 1000)
        return ts.isoformat(sep=" ", timespec="milliseconds")
    if pg_type == "boolean":
        return "t" if seed % 2 else "f"
    if pg_type.startswith("character varying"):
        return CURRENCY_CODES[seed % len(CURRENCY_CODES)]
    if name.endswith("_date"):  # dates stored as text at the source, as dates in the facts
        return (dt.date(2024, 11, 20) + dt.timedelta(days=seed)).isoformat()
    return None if seed % 7 == 6 else f"{name[:8]}-{seed}"


def typed(column: Column, text: str | None) -> Any:
    """The value as the warehouse returns it (psycopg2), from its text form."""
    return None if text is None else contract.arrow_type(column.type)[1](text)


# --- the source, replayed ------------------------------------------------------------------------

Row = dict[str, str | None]


@dataclass(frozen=True)
class Version:
    """A version of one source row the warehouse must hold: a change event, or the tombstone a
    truncate gives the rows it removes (``event`` False)."""

    table: str
    key: int
    op: str
    lsn: int
    seq: int
    commit_ts: dt.datetime | None
    values: Row  # every column: the row after the change, or the last values before a deletion
    event: bool = True


@dataclass
class Replay:
    """The history replayed against a source: its events and the versions they make."""

    columns: Mapping[str, tuple[Column, ...]]
    events: list[ChangeEvent] = field(default_factory=list)  # the stream's
    # Each table read, to the lake: (table, lsn, its reads, its marker: HERE after its files, LATER
    # in the table's next marker, NONE for a read killed part way).
    reads: list[tuple[str, int, list[ChangeEvent], str]] = field(default_factory=list)
    versions: list[Version] = field(default_factory=list)
    rows: dict[str, dict[int, Row]] = field(default_factory=dict)
    # What the warehouse can know of each row so far: the values its versions carried. A row the
    # source had before a resumed snapshot's C2 but the read at C did not cover is known from its
    # changes only: a truncate leaves it no version, a delete no values, an update those it sent.
    known: dict[str, dict[int, Row]] = field(default_factory=lambda: {t: {} for t in TABLES})

    def key_column(self, table: str) -> Column:
        return next(c for c in self.columns[table] if c.key)

    def others(self, table: str) -> tuple[Column, ...]:
        return tuple(c for c in self.columns[table] if not c.key)

    def new_row(self, table: str, key: int, seeds: Sequence[int | None]) -> Row:
        row: Row = {self.key_column(table).name: str(key)}
        for i, column in enumerate(self.others(table)):
            seed = seeds[i] if i < len(seeds) else None
            row[column.name] = value_text(column, key + i if seed is None else seed)
        return row


def replay(history: History, columns: Mapping[str, tuple[Column, ...]]) -> Replay:
    """The change events of ``history`` and the versions they make, in source order."""
    source = Replay(columns, rows={t: {} for t in TABLES})
    for op in history.initial:
        if op.kind in ("insert", "update"):
            source.rows[op.table][op.key] = source.new_row(op.table, op.key, op.seeds)
    for table in TABLES:
        if history.resumed is None:
            _read(source, table, SNAPSHOT_LSN, SNAPSHOT_TS)
        else:
            done = [k for k in source.rows[table] if k <= RESUME_SPLIT]
            _read(source, table, SNAPSHOT_LSN, SNAPSHOT_TS, done, LATER)
    lsn, commit_ts = SNAPSHOT_LSN, SNAPSHOT_TS
    for number, txn in enumerate(history.transactions):
        if number == history.resumed:
            lsn, commit_ts = _resume(source, lsn, commit_ts)
        if number or not history.commit_at_snapshot:
            lsn += LSN_STEP
        commit_ts += dt.timedelta(hours=txn.hours, minutes=1)
        seq = 0
        for op in txn.ops:
            made = _change(source, op, lsn, seq + 1, commit_ts, xid=number + 1)
            seq += made
    if history.resumed is not None and history.resumed >= len(history.transactions):
        lsn, commit_ts = _resume(source, lsn, commit_ts)
    if history.resync and history.abandoned:
        lsn, commit_ts = lsn + LSN_STEP, commit_ts + dt.timedelta(minutes=1)
        for table in TABLES:
            if table in history.resync:
                _read(source, table, lsn, commit_ts, sorted(source.rows[table])[:history.abandoned], NONE)
    for round_ in range(history.rounds if history.resync else 0):
        for i, op in enumerate(history.lost):
            if op.table in history.resync and i % history.rounds == round_:
                source.rows[op.table].pop(op.key, None)
        lsn, commit_ts = lsn + LSN_STEP, commit_ts + dt.timedelta(minutes=1)
        for table in TABLES:
            if table in history.resync:
                _ghosts(source, table, lsn)
                _read(source, table, lsn, commit_ts)
    return source


def _resume(source: Replay, lsn: int, commit_ts: dt.datetime) -> tuple[int, dt.datetime]:
    """The resumed snapshot's read at C2 (after ``lsn``) of the rows of keys above RESUME_SPLIT."""
    lsn, commit_ts = lsn + LSN_STEP, commit_ts + dt.timedelta(minutes=1)
    for table in TABLES:
        _read(source, table, lsn, commit_ts, [k for k in source.rows[table] if k > RESUME_SPLIT])
    return lsn, commit_ts


HERE, LATER, NONE = "here", "later", "none"


def _read(source: Replay, table: str, lsn: int, commit_ts: dt.datetime, keys: Sequence[int] | None = None,
          marker: str = HERE) -> None:
    """A read of ``table``'s rows at ``lsn`` (or of those of ``keys``), written to the lake (seqs:
    contract.snapshot_seq), and where its files go in a marker (HERE, LATER, NONE)."""
    reads = []
    for ordinal, key in enumerate(sorted(source.rows[table] if keys is None else keys), start=1):
        row = source.rows[table][key]
        event = ChangeEvent(contract.OP_SNAPSHOT, SCHEMA, table, lsn, contract.snapshot_seq(ordinal),
                            commit_ts, source.columns[table], after=dict(row), snapshot=True)
        reads.append(event)
        source.versions.append(Version(table, key, event.op, lsn, event.seq, commit_ts, dict(row)))
        source.known[table][key] = dict(row)
    source.reads.append((table, lsn, reads, marker))


def _ghosts(source: Replay, table: str, lsn: int) -> None:
    """The ghost tombstones of a read of ``table`` at ``lsn``: rows whose last version is live but
    that the source no longer has (lost deletes). Their commit time is left out (None): for a
    table read empty the loader can only give the time it swept."""
    last = {v.key: v for v in source.versions if v.table == table}
    for key, version in sorted(last.items()):
        if version.op in LIVE and key not in source.rows[table]:
            source.versions.append(Version(table, key, contract.OP_DELETE, lsn, GHOST_SEQ, None,
                                           dict(version.values)))


def _change(source: Replay, op: Op, lsn: int, seq: int, commit_ts: dt.datetime, xid: int) -> int:
    """Apply ``op`` to the source; the number of events it made (0, 1, or 2 for a key change)."""
    table, rows, columns = op.table, source.rows[op.table], source.columns[op.table]
    key_name = source.key_column(table).name

    def emit(kind: str, before: Row | None, after: Row | None, unchanged: tuple[str, ...] = ()) -> None:
        source.events.append(ChangeEvent(kind, SCHEMA, table, lsn, seq, commit_ts, columns, before,
                                         after, xid, False, unchanged))

    known = source.known[table]

    def version(key: int, kind: str, sent: Row | None = None, event: bool = True) -> None:
        """A version of row ``key`` with the values the warehouse knows: those ``sent`` (an insert
        or update; unchanged columns left out) over the row's earlier ones, or the earlier ones
        (a deletion)."""
        values = known[key] = {**known.get(key, {}), **(sent or {})}
        if not values:  # a deletion of a row the warehouse has no version of: its key alone
            values = {key_name: str(key)}
        source.versions.append(Version(table, key, kind, lsn, seq, commit_ts, dict(values), event))

    if op.kind == "truncate":
        emit(contract.OP_TRUNCATE, None, None)
        for key in sorted(rows.keys() & known.keys()):  # a row with no version is not the warehouse's
            version(key, contract.OP_DELETE, event=False)
        rows.clear()
        return 1
    if op.kind == "delete":
        if op.key not in rows:
            return 0
        emit(contract.OP_DELETE, {key_name: str(op.key)}, None)
        del rows[op.key]
        version(op.key, contract.OP_DELETE)
        return 1
    if op.kind == "rekey":  # capture sends the old key's delete, then the new key's insert
        if op.key not in rows or op.new_key in rows:
            return 0
        row = rows.pop(op.key)
        moved = rows[op.new_key] = {**row, key_name: str(op.new_key)}
        emit(contract.OP_DELETE, {key_name: str(op.key)}, None)
        version(op.key, contract.OP_DELETE)
        seq += 1
        unchanged = _toasted(source, op, row)
        emit(contract.OP_INSERT, None, {k: v for k, v in moved.items() if k not in unchanged}, unchanged)
        version(op.new_key, contract.OP_INSERT, moved)
        return 2
    if op.key not in rows:  # an insert, or an update of a row not there: an insert
        row = source.new_row(table, op.key, op.seeds)
        rows[op.key] = row
        emit(contract.OP_INSERT, None, dict(row))
        version(op.key, contract.OP_INSERT, row)
        return 1
    old = rows[op.key]
    new = dict(old)
    for i, column in enumerate(source.others(table)):
        seed = op.seeds[i] if i < len(op.seeds) else None
        if seed is not None:
            new[column.name] = value_text(column, seed)
    unchanged = _toasted(source, op, new) if op.kind == "update" else ()
    rows[op.key] = new
    sent = {k: v for k, v in new.items() if k not in unchanged}
    emit(contract.OP_UPDATE, None, sent, unchanged)
    version(op.key, contract.OP_UPDATE, sent)
    return 1


def _toasted(source: Replay, op: Op, row: Row) -> tuple[str, ...]:
    """The columns an update of ``row`` sends as TOAST-unchanged: text values ``op`` keeps and marks."""
    return tuple(
        column.name for i, column in enumerate(source.others(op.table))
        if (i >= len(op.seeds) or op.seeds[i] is None) and i < len(op.toast) and op.toast[i]
        and row[column.name] is not None and column.type.startswith(TOASTABLE))


def change_events(history: History, columns: Mapping[str, tuple[Column, ...]]) -> list[ChangeEvent]:
    return replay(history, columns).events


# --- the expected warehouse ----------------------------------------------------------------------

Position = tuple[int, int]


@dataclass
class Warehouse:
    """Warehouse contents in comparable form (the model's, or read from a real warehouse).

    ``mirror``: table -> key -> (typed values by column, source position, is_deleted);
    ``dimensions``: dimension -> key -> columns; ``current``: fact -> key -> (columns, op, lsn, seq);
    ``history``: fact -> key -> versions in source order, each (columns, op, lsn, seq, commit ts,
    is_deleted), seq None for a truncate's tombstone (its stored seq also encodes the row);
    ``dates``: the dates the facts reference (dim_date must hold them).
    """

    mirror: dict[str, dict[int, tuple[tuple[Any, ...], Position, bool]]] = field(default_factory=dict)
    dimensions: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)
    current: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)
    history: dict[str, dict[int, list[tuple[Any, ...]]]] = field(default_factory=dict)
    dates: set[dt.date] = field(default_factory=set)


_EXPRESSION = re.compile(r"(\w+)(?:::(date|time))?")


def fact_values(table: str, columns: Sequence[Column], values: Row) -> tuple[Any, ...]:
    """A source row converted to its fact table's columns (``created_at::date`` and the like)."""
    types = {c.name: c for c in columns}
    out = []
    for _, expression in FACTS_BY_SOURCE[table].columns:
        match = _EXPRESSION.fullmatch(expression)
        assert match, f"fact column expression the model does not know: {expression}"
        value = typed(types[match[1]], values.get(match[1]))
        if value is not None and match[2] == "date":
            value = value.date() if isinstance(value, dt.datetime) else dt.date.fromisoformat(value)
        elif value is not None and match[2] == "time":
            value = value.time()
        out.append(value)
    return tuple(out)


def expected(history: History, columns: Mapping[str, tuple[Column, ...]]) -> Warehouse:
    """The warehouse after every event of ``history`` is applied, in any order, any number of times."""
    source = replay(history, columns)
    model = Warehouse()
    last: dict[str, dict[int, Version]] = {t: {} for t in TABLES}
    for v in source.versions:
        last[v.table][v.key] = v
    for table in TABLES:
        model.mirror[table] = {
            key: (tuple(typed(c, v.values.get(c.name)) for c in columns[table]), (v.lsn, v.seq),
                  v.op == contract.OP_DELETE) for key, v in last[table].items()}
    # a row only ever seen deleted (its values unknown) has no dimension row
    values = {t: {k: v.values for k, v in last[t].items() if set(v.values) != {source.key_column(t).name}}
              for t in TABLES}
    model.dimensions = _dimensions(values)
    for table in ("sales_order", "payment"):
        fact = FACTS_BY_SOURCE[table].table
        model.current[fact], model.history[fact] = {}, {}
        before: dict[int, tuple[str, tuple[Any, ...]]] = {}
        for v in source.versions:
            if v.table != table:
                continue
            converted = fact_values(table, columns[table], v.values)
            previous, before[v.key] = before.get(v.key), (v.op, converted)
            if v.op == contract.OP_SNAPSHOT and previous and previous[0] in LIVE \
                    and previous[1] == converted:
                continue  # a read of a row that did not change is no fact version
            deleted = v.op == contract.OP_DELETE
            model.history[fact].setdefault(v.key, []).append(
                (converted, v.op, v.lsn, v.seq if v.event else None, v.commit_ts, deleted))
            if deleted:
                model.current[fact].pop(v.key, None)
            else:
                model.current[fact][v.key] = (converted, v.op, v.lsn, v.seq)
            date_columns = FACTS_BY_SOURCE[table].date_columns
            names = FACTS_BY_SOURCE[table].names
            model.dates |= {converted[names.index(c)] for c in date_columns} - {None}
    return model


def _dimensions(rows: Mapping[str, Mapping[int, Row]]) -> dict[str, dict[int, tuple[Any, ...]]]:
    """docs/warehouse.md's dimensions over the last values of every row ever seen (a deleted source
    row keeps its dimension row)."""
    def integer(text: str | None) -> int | None:
        return None if text is None else int(text)

    address_columns = ("address_line_1", "address_line_2", "district", "city", "postal_code",
                       "country", "phone")
    none = (None,) * len(address_columns)

    def address(key: str | None) -> tuple[Any, ...]:
        row = rows["address"].get(integer(key) or 0)
        return none if row is None else tuple(row[c] for c in address_columns)

    def department(key: str | None) -> tuple[Any, ...]:
        row = rows["department"].get(integer(key) or 0)
        return (None, None) if row is None else (row["department_name"], row["location"])

    def currency(code: str | None) -> tuple[Any, ...]:
        name = None if code is None else currency_name(code) or UNKNOWN_CURRENCY.format(code)
        return (code, name)

    return {
        "dim_location": {k: address(str(k)) for k in rows["address"]},
        "dim_counterparty": {k: (r["counterparty_legal_name"], *address(r["legal_address_id"]))
                             for k, r in rows["counterparty"].items()},
        "dim_currency": {k: currency(r["currency_code"]) for k, r in rows["currency"].items()},
        "dim_staff": {k: (r["first_name"], r["last_name"], *department(r["department_id"]),
                          r["email_address"]) for k, r in rows["staff"].items()},
    }


# --- events -> processed files, as the stream processor cuts them ----------------------------------

@dataclass(frozen=True)
class Delivery:
    """How the stream delivers the events: per-shard batch sizes (cycled), batches delivered again
    under a different range (a retried, bisected batch: same events, new file keys)."""

    batch_sizes: tuple[int, ...] = (1,)
    redelivered: tuple[tuple[int, int, int], ...] = ()  # (shard, first event, events), wrapped round
    snapshot_file_rows: int = 2  # reads per lake file of a table read


class _Shards:
    """The stream's shards as the local stack creates them (the emulator splits the hash-key space
    evenly, as Kinesis does)."""

    def __init__(self, count: int) -> None:
        step = 2**128 // count
        self._shards = [Shard(f"shardId-{i:012d}", i * step,
                              2**128 - 1 if i == count - 1 else (i + 1) * step - 1) for i in range(count)]

    def shards(self) -> Sequence[Shard]:
        return self._shards

    def put_records(self, records: Sequence[Any]) -> list[str | None]:
        raise AssertionError("the model only routes; nothing is put")


def shard_streams(events: Sequence[ChangeEvent]) -> list[list[ChangeEvent]]:
    """The events each shard carries, in order: routed by partition key as capture's producer does."""
    sink = _Shards(settings()["stream"]["shard_count"])
    router = Producer(sink, lambda *_: None)
    try:
        streams: list[list[ChangeEvent]] = [[] for _ in sink.shards()]
        for event in events:
            streams[router.shard_index(event.partition_key.encode())].append(event)
        return streams
    finally:
        router.close()


@dataclass(frozen=True)
class ProcessedFile:
    """A processed object as the loader receives it, and the shard whose batch wrote it."""

    shard: int
    key: str
    data: bytes


class _ProcessedZone:
    """An S3 client that keeps what the stream processor puts (the bytes the loader would read)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Key: str, Body: bytes, **_: Any) -> None:
        self.objects[Key] = Body


def processed_files(events: Sequence[ChangeEvent], delivery: Delivery) -> list[ProcessedFile]:
    """Every processed file the stream processor writes, shard by shard, each shard's in order.

    Each event is one Kinesis record, KPL-aggregated as capture sends it; each batch goes through
    the processor's own parsing and writing (``columnar.parse_batch``, ``store.write_batch``).
    """
    config = ProcessorConfig.from_settings()
    out: list[ProcessedFile] = []
    streams = shard_streams(events)
    for index, stream in enumerate(streams):
        if not stream:
            continue
        kinesis = [(kpl.aggregate([(e.partition_key, contract.encode(e))]), e.partition_key, str(n))
                   for n, e in enumerate(stream, start=1)]  # sequence numbers: moto's counters
        batches: list[tuple[int, int]] = []
        start, n = 0, 0
        while start < len(stream):
            size = delivery.batch_sizes[n % len(delivery.batch_sizes)]
            batches.append((start, min(start + size, len(stream))))
            start, n = start + size, n + 1
        for shard, first, count in delivery.redelivered:
            if shard % len(streams) == index:
                begin = first % len(stream)
                batches.append((begin, min(begin + count, len(stream))))
        for begin, end in batches:
            zone = _ProcessedZone()
            batch = BatchId(f"shardId-{index:012d}", kinesis[begin][2], kinesis[end - 1][2])
            result = write_batch(ObjectStore(zone), config, batch, parse_batch(kinesis[begin:end]), "")
            out += [ProcessedFile(index, key, zone.objects[key]) for key in result.processed_keys]
    return out


LAKE = 1000  # the "shard" of a table read's lake files: each read its own, in write order


def lake_files(history: History, columns: Mapping[str, tuple[Column, ...]],
               delivery: Delivery) -> list[ProcessedFile]:
    """Each table read as capture writes it to the lake: files of ``snapshot_file_rows`` reads,
    then the read's completion marker listing them (a resync's even when it read nothing; a resumed
    snapshot's lists its files of both reads, at C), but for a read killed part way."""
    out: list[ProcessedFile] = []
    carried: dict[str, tuple[list[str], int]] = {}  # a resumed snapshot's files read at C, and rows
    for n, (table, lsn, reads, marker) in enumerate(replay(history, columns).reads):
        size, keys = delivery.snapshot_file_rows, []
        for first in range(0, len(reads), size):
            chunk = reads[first:first + size]
            keys.append(snapshot_key(table, lsn, f"{first + 1}-{first + len(chunk)}"))
            out.append(ProcessedFile(LAKE + n, keys[-1], parquet_bytes(columns[table], [
                processed_row(e.op, e.lsn, e.seq, e.after, commit_ts=e.commit_ts) for e in chunk])))
        if marker == LATER:
            carried[table] = (keys, len(reads))
        if marker != HERE:
            continue
        at_c = carried.pop(table, None)
        earlier, rows = at_c or ([], 0)
        first_lsn = lsn if at_c is None else SNAPSHOT_LSN
        if rows + len(reads) == 0 and first_lsn == SNAPSHOT_LSN:
            continue  # an empty table's first read completes nothing: its marker is left out
        done = SnapshotMarker(SCHEMA, table, first_lsn, tuple(earlier + keys), rows + len(reads),
                              first_lsn != SNAPSHOT_LSN)
        out.append(ProcessedFile(LAKE + n, snapshot_key(table, first_lsn, "done"),
                                 marker_parquet(done, columns[table])))
    return out


@dataclass(frozen=True)
class Arrival:
    """How the files reach the loaders. ``priorities`` (cycled over the files) choose the order;
    ``twice`` picks a file delivered a second time; ``loaders`` apply files at the same time."""

    shape: str  # in_order: each shard's files in write order (shards interleaved); any_order
    priorities: tuple[int, ...] = (0,)
    twice: int = 0
    loaders: int = 1

    def order(self, written: Sequence[ProcessedFile]) -> list[ProcessedFile]:
        if not written:
            return []
        again = written[self.twice % len(written)]
        if self.shape == "in_order":  # a replay comes right after the file: no reordering
            queues: dict[int, list[ProcessedFile]] = {}
            for f in written:
                queues.setdefault(f.shard, []).append(f)
            out: list[ProcessedFile] = []
            for i in range(len(written)):
                shards = sorted(s for s, q in queues.items() if q)
                f = queues[shards[self.priorities[i % len(self.priorities)] % len(shards)]].pop(0)
                out += [f, f] if f is again else [f]
            return out
        ranked = sorted(range(len(written) + 1),
                        key=lambda i: (self.priorities[i % len(self.priorities)], i))
        return [[*written, again][i] for i in ranked]


# --- Hypothesis strategies -----------------------------------------------------------------------

MAX_OTHER_COLUMNS = 11  # payment's non-key columns, the most of any modelled table
KINDS = ("insert", "update", "delete", "truncate", "rekey")


@st.composite
def ops(draw: st.DrawFn, kinds: Sequence[str] = KINDS, toasted_key_changes: bool = False) -> Op:
    kind = draw(st.sampled_from(kinds))
    table = draw(st.sampled_from(TABLES))
    key = draw(st.integers(1, KEY_SPACE))
    if kind == "truncate":
        return Op(kind, table)
    if kind == "delete":
        return Op(kind, table, key)
    if kind == "rekey":  # the row keeps its values; TOASTed ones may be sent unchanged
        toast = draw(st.lists(st.booleans(), min_size=MAX_OTHER_COLUMNS, max_size=MAX_OTHER_COLUMNS)
                     if toasted_key_changes else st.just([]))
        return Op(kind, table, key, toast=tuple(toast), new_key=draw(st.integers(1, KEY_SPACE)))
    seeds = draw(st.lists(st.none() | st.integers(0, 30), min_size=MAX_OTHER_COLUMNS,
                          max_size=MAX_OTHER_COLUMNS))
    toast = draw(st.lists(st.booleans(), min_size=MAX_OTHER_COLUMNS, max_size=MAX_OTHER_COLUMNS))
    return Op(kind, table, key, tuple(seeds), tuple(toast))


def histories(kinds: Sequence[str] = KINDS, max_transactions: int = 4,
              toasted_key_changes: bool = False) -> st.SearchStrategy[History]:
    """Histories whose transactions use ``kinds`` of op (before the snapshot: inserts only).

    A key change's new row is complete (as capture sends it under REPLICA IDENTITY FULL, or for a
    row without TOASTed values) unless ``toasted_key_changes``: then it may list TOAST-unchanged
    columns, whose values only the old key's versions hold (the default replica identity).

    Small on purpose: a few rows per table and a few transactions already reach every ordering
    problem, and each example costs a warehouse load (tens of milliseconds per file).
    """
    transactions = st.builds(Transaction, st.lists(ops(kinds, toasted_key_changes), min_size=1,
                                                   max_size=3).map(tuple),
                             st.integers(0, 8))
    lost = st.builds(Op, st.just("delete"), st.sampled_from(TABLES), st.integers(1, KEY_SPACE))
    return st.builds(History, st.lists(ops(("insert",)), max_size=6).map(tuple),
                     st.lists(transactions, max_size=max_transactions).map(tuple), st.booleans(),
                     st.lists(st.sampled_from(TABLES), unique=True, max_size=2).map(tuple),
                     st.lists(lost, max_size=3).map(tuple), st.integers(1, 2), st.integers(0, 3),
                     st.none() | st.integers(0, max_transactions))


def arrivals(shape: str, max_loaders: int = 1) -> st.SearchStrategy[Arrival]:
    return st.builds(Arrival, st.just(shape), st.lists(st.integers(0, 50), min_size=1).map(tuple),
                     st.integers(0, 50), st.integers(1, max_loaders))


def deliveries() -> st.SearchStrategy[Delivery]:
    return st.builds(
        Delivery, st.lists(st.integers(1, 8), min_size=1, max_size=4).map(tuple),
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(1, 4)),
                 max_size=2).map(tuple), st.integers(1, 3))

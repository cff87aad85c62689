"""The correctness check, against a live source, warehouse and raw zone (docs/reconcile.md).

Three comparisons, each a table of the report:

- **current state**: each dimension equals its derivation (:mod:`warehouse_loader.derivation`)
  applied to the source's current rows (a dimension row whose source row was deleted may stay, the
  mirror says so; dim_date must hold every date the source's order/payment rows reference), and each
  fact table's current-state table equals the source table's current rows, converted;
- **history** (``<fact> history``): every change event of a fact source table in the raw zone has
  exactly one fact version at its position, with its op and commit time and the row's values
  (a delete's tombstone: the row's last values; a truncate: one tombstone per row current before
  it; a completed snapshot read the warehouse recorded: the ghost tombstones of the rows it did
  not see), and no fact version lacks its event;
- **raw zone** (``raw zone <table>``): the raw zone's events, replayed in position order, give
  exactly the source table's current rows, so the raw zone (and the history above) is complete
  up to the source's state that was read: the pipeline had caught up.

The source and the warehouse are each read in one REPEATABLE READ transaction. Both sides are read
whole and compared in Python: the real dataset is ~50k rows.
"""

from __future__ import annotations

import bisect
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import boto3
import fastavro
import psycopg2
from psycopg2 import sql

from totes_cdc.contract import (
    GHOST_SEQ,
    OP_DELETE,
    OP_INSERT,
    OP_SNAPSHOT,
    OP_TRUNCATE,
    OP_UPDATE,
    SEQ_RANGE,
    TOMBSTONE_SEQ_FACTOR,
)
from totes_cdc.db import connect, error
from totes_cdc.errors import ConfigError, DatabaseError, DatabaseUnavailable, first_line
from totes_cdc.lakefiles import ObjectStore, StoreError
from totes_cdc.settings import settings
from warehouse_loader.derivation import (
    DATE_COLUMNS,
    DIMENSIONS,
    FACTS,
    MIRROR_SCHEMA,
    SOURCE_SCHEMA,
    Fact,
    date_rows,
    iso_currency_parameters,
)

T = TypeVar("T")
SAMPLE_KEYS = 5
_LIVE = (OP_SNAPSHOT, OP_INSERT, OP_UPDATE)  # the operations of a version that holds a live row
MAX_CONCURRENT_GETS = 8  # below botocore's default connection pool size (10)
# botocore retries a failed request, but not a body that fails its checksum while it is read
# (an empty or cut body: seen from the local emulator under load). Each list and read is tried
# this many times, 0.2 s, 0.4 s, ... apart, before reconcile gives up on the raw zone.
READ_ATTEMPTS = 4


@dataclass
class TableReport:
    """One comparison: ``compared`` expected rows, and the first differing keys."""

    table: str
    compared: int = 0
    missing: int = 0        # expected, not in ``against``
    extra: int = 0          # in ``against``, not expected
    different: int = 0      # in both, with different values
    against: str = "the warehouse"
    sample_missing: list[Any] = field(default_factory=list)
    sample_extra: list[Any] = field(default_factory=list)
    sample_different: list[Any] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.different


@dataclass
class Report:
    tables: list[TableReport]
    # What was compared: the source's WAL position when it was read, and how far the history went.
    compared: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(t.differences == 0 for t in self.tables)


def compare(table: str, expected: Iterable[Sequence[Any]], actual: Iterable[Sequence[Any]],
            may_stay: frozenset[Any] | None = frozenset(), against: str = "the warehouse") -> TableReport:
    """Compare rows keyed by their first value. Extra keys in ``may_stay`` (all, if None) are fine."""
    want = {row[0]: tuple(row) for row in expected}
    have = {row[0]: tuple(row) for row in actual}
    report = TableReport(table, compared=len(want), against=against)
    for key in sorted(want):
        if key not in have:
            report.missing += 1
            _sample(report.sample_missing, key)
        elif have[key] != want[key]:
            report.different += 1
            _sample(report.sample_different, key)
    for key in sorted(have.keys() - want.keys()):
        if may_stay is not None and key not in may_stay:
            report.extra += 1
            _sample(report.sample_extra, key)
    return report


def _sample(keys: list[Any], key: Any) -> None:
    if len(keys) < SAMPLE_KEYS:
        keys.append(key.isoformat() if hasattr(key, "isoformat") else key)


def _rows(cur: Any, query: sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    cur.execute(query, params)
    return list(cur.fetchall())


def _select(table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(table))


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# --- the raw zone ---------------------------------------------------------------------------------

class RawZone:
    """The raw Avro files of the stream processor (stream_processors/store.py writes them).

    Raw objects are immutable (written once, never replaced), so each is read once per RawZone:
    a RawZone kept across checks reads only the objects that are new.
    """

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self._store, self._bucket, self._prefix = ObjectStore(s3), bucket, prefix
        self._read_before: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def from_settings(cls) -> RawZone:
        """The raw bucket of settings.json, through boto3's usual environment."""
        cfg = settings()
        return cls(boto3.client("s3"), cfg["buckets"]["raw"], cfg["prefixes"]["raw"])

    def records(self, table: str) -> list[dict[str, Any]]:
        """Every change event of ``public.<table>`` in the raw zone, as fastavro decodes them
        (a replayed batch may hold an event twice)."""
        prefix = f"{self._prefix}{SOURCE_SCHEMA}.{table}/"
        try:
            keys = _tried(self._store.keys, self._bucket, prefix)
            new = [key for key in keys if key not in self._read_before]
            with ThreadPoolExecutor(MAX_CONCURRENT_GETS) as pool:
                self._read_before.update(zip(new, pool.map(self._read, new), strict=True))
            return [record for key in keys for record in self._read_before[key]]
        except StoreError as exc:
            raise ConfigError(f"cannot read the raw zone s3://{self._bucket}/{prefix}: {exc}") from None

    def _read(self, key: str) -> list[dict[str, Any]]:
        body = _tried(self._store.get, self._bucket, key)
        return [r for r in fastavro.reader(io.BytesIO(body)) if isinstance(r, dict)]


def _tried(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``, tried up to READ_ATTEMPTS times while S3 fails; the last failure is raised."""
    for attempt in range(READ_ATTEMPTS - 1):
        try:
            return call(*args)
        except StoreError:
            time.sleep(0.2 * 2 ** attempt)
    return call(*args)


# --- history: the fact versions the raw zone's events call for ------------------------------------

@dataclass(frozen=True)
class Version:
    """A fact version the raw zone calls for, with the source row's values as text."""

    op: str
    lsn: int
    seq: int
    commit_ts: Any
    key: str
    values: dict[str, str | None]

    @property
    def identity(self) -> tuple[int, int, str]:
        """Its fact row's position and row."""
        return self.lsn, self.seq, self.key


@dataclass
class History:
    """The versions of one fact source table, in position order, and the rows current at the end
    (key -> index of the version holding the current values)."""

    versions: list[Version]
    current: dict[str, int]


def _row(event: dict[str, Any], key: str) -> str:
    return str(((event["before"] if event["op"] == OP_DELETE else event["after"]) or {})[key])


def history(records: Iterable[dict[str, Any]], key: str, sweeps: Sequence[tuple[int, Any]] = ()) -> History:
    """Replay a table's change events (deduplicated by position, in position order).

    An insert, update or snapshot read is a version with its new values, TOAST-unchanged columns
    taken from the row's previous version; a delete is a tombstone with the row's last values; a
    truncate is a tombstone for every row current before it, at the position the loader gives it
    (``source_seq = -(truncate seq * 2^31 + id)``). ``sweeps``: the table's completed reads the
    warehouse recorded (lsn S, commit time): at (S, GHOST_SEQ) a row current with its last version
    below S, whose first event from lsn S on is none or an insert, gets a ghost tombstone (the read
    at S did not see it: deleted with no event), as the loader gives it.
    """
    events: dict[tuple[int, int], dict[str, Any] | None] = {(r["lsn"], r["seq"]): r for r in records}
    later: dict[str, list[tuple[int, int, str]]] = {}  # row -> its events' positions and ops
    for (lsn, seq), event in sorted(events.items()):
        if event is not None and event["op"] != OP_TRUNCATE:
            later.setdefault(_row(event, key), []).append((lsn, seq, event["op"]))
    sweep_ts = dict(sweeps)
    events.update({(lsn, GHOST_SEQ): None for lsn in sweep_ts})
    last: dict[str, dict[str, str | None]] = {}
    current: dict[str, int] = {}
    versions: list[Version] = []
    for lsn, seq in sorted(events):
        if (event := events[(lsn, seq)]) is None:  # a completed read's sweep
            for row in sorted(current, key=int):
                if versions[current[row]].lsn >= lsn:
                    continue
                after = later[row][bisect.bisect_left(later[row], (lsn, -SEQ_RANGE, "")):]
                if not after or after[0][2] == OP_INSERT:
                    versions.append(Version(OP_DELETE, lsn, GHOST_SEQ, sweep_ts[lsn], row, last[row]))
                    del current[row]
            continue
        op, commit_ts = event["op"], event["commit_ts"]
        if op == OP_TRUNCATE:
            for row in sorted(current, key=int):
                versions.append(Version(OP_DELETE, lsn, -(seq * TOMBSTONE_SEQ_FACTOR + int(row)),
                                        commit_ts, row, last[row]))
            current.clear()
        elif op == OP_DELETE:
            row = _row(event, key)
            versions.append(Version(op, lsn, seq, commit_ts, row, last.get(row, {key: row})))
            current.pop(row, None)
        else:
            values = dict(event["after"] or {})
            row = str(values[key])
            for name in event["unchanged"]:
                values[name] = last.get(row, {}).get(name)
            last[row] = values
            current[row] = len(versions)
            versions.append(Version(op, lsn, seq, commit_ts, row, values))
    return History(versions, current)


def _csv(rows: Iterable[Sequence[str | None]]) -> io.StringIO:
    """CSV for COPY: None unquoted (NULL), every text quoted (an empty string stays one)."""
    return io.StringIO("".join(
        ",".join("" if v is None else '"' + v.replace('"', '""') + '"' for v in row) + "\n"
        for row in rows))


def convert(cur: Any, fact: Fact, columns: Sequence[tuple[str, str]],
            versions: Sequence[Version]) -> list[tuple[Any, ...]]:
    """Each version's fact columns, by the loader's own conversion, run in the warehouse over a
    temporary table typed like the source table (``columns``: name, type)."""
    names = [name for name, _ in columns]
    # the types are format_type()'s: SQL type syntax, any identifier in it quoted by the server
    cur.execute(sql.SQL("CREATE TEMP TABLE reconcile_versions (_n integer, {}) ON COMMIT DROP").format(
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                           for n, t in columns)))
    cur.copy_expert("COPY reconcile_versions FROM STDIN WITH (FORMAT csv)", _csv(
        [str(n), *(v.values.get(name) for name in names)] for n, v in enumerate(versions)))
    converted = fact.convert(sql.Identifier("reconcile_versions"), (sql.Identifier("_n"),))
    rows = _rows(cur, sql.SQL("SELECT * FROM ({}) AS v ORDER BY _n").format(converted))
    cur.execute("DROP TABLE reconcile_versions")
    return [row[:-1] for row in rows]


def compare_history(fact: Fact, raw: History, converted: Sequence[tuple[Any, ...]],
                    stored: Iterable[tuple[Any, ...]]) -> TableReport:
    """The fact table's rows (position, op, commit time, deleted, fact columns) against the
    versions the raw zone calls for.

    A snapshot read with the fact values of the row's version just before it, itself live (a
    read, an insert, an update), is that version again (a resync, or a resumed snapshot, re-reads
    rows that did not change): the loader stores the first of such a run, and exactly one of
    them must be stored.

    Versions are matched by position and row: the ghost tombstones of one sweep share a position.
    """
    key_at = 5 + fact.names.index(fact.key)
    have = {(row[0], row[1], str(row[key_at])): row[2:] for row in stored}
    groups: dict[tuple[Any, ...], list[int]] = {}
    previous: dict[str, tuple[int, tuple[Any, ...]]] = {}  # key -> (its last version, its group)
    for n, version in enumerate(raw.versions):
        before = previous.get(version.key)
        group: tuple[Any, ...] = (n,)
        if (before is not None and version.op == OP_SNAPSHOT and raw.versions[before[0]].op in _LIVE
                and converted[before[0]] == converted[n]):
            group = before[1]
        groups.setdefault(group, []).append(n)
        previous[version.key] = (n, group)
    report = TableReport(f"{fact.table} history", compared=len(groups))
    seen: set[tuple[int, int, str]] = set()
    for members in groups.values():
        present = [n for n in members if raw.versions[n].identity in have]
        first = raw.versions[members[0]]
        if not present:
            report.missing += 1
            _sample(report.sample_missing, f"{first.key}@{lsn_text(first.lsn)}:{first.seq}")
            continue
        for n in present:
            seen.add(raw.versions[n].identity)
        version = raw.versions[present[0]]
        if len(present) > 1:
            report.extra += len(present) - 1
            _sample(report.sample_extra, f"{version.key}@{lsn_text(version.lsn)}:{version.seq}")
        want = (version.op, version.commit_ts, version.op == OP_DELETE, *converted[present[0]])
        if tuple(have[version.identity]) != want:
            report.different += 1
            _sample(report.sample_different, f"{version.key}@{lsn_text(version.lsn)}:{version.seq}")
    for lsn, seq, key in sorted(have.keys() - seen):
        report.extra += 1
        _sample(report.sample_extra, f"{key}@{lsn_text(lsn)}:{seq}")
    return report


def _source_columns(cur: Any, table: str) -> list[tuple[str, str]]:
    cur.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (f"{SOURCE_SCHEMA}.{table}",))
    return list(cur.fetchall())


def _stored_facts(cur: Any, fact: Fact) -> list[tuple[Any, ...]]:
    return _rows(cur, sql.SQL("SELECT source_lsn, source_seq, source_op, source_commit_ts, "
                              "is_deleted, {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in fact.names), sql.Identifier(fact.table)))


# --- the whole check ------------------------------------------------------------------------------

def _source_facts(fact: Fact) -> sql.Composed:
    return fact.convert(sql.Identifier(SOURCE_SCHEMA, fact.source))


def _current_state(src: Any, wh: Any) -> list[TableReport]:
    tables = []
    iso = iso_currency_parameters()
    for dim in DIMENSIONS:
        deleted = _rows(wh, sql.SQL("SELECT {} FROM {} WHERE is_deleted").format(
            sql.Identifier(dim.source_key), sql.Identifier(MIRROR_SCHEMA, dim.source)))
        tables.append(compare(dim.table, _rows(src, dim.derive(SOURCE_SCHEMA), iso),
                              _rows(wh, _select(dim.table, dim.all_columns)),
                              frozenset(r[0] for r in deleted)))
    dates = sql.SQL(" UNION ").join(
        fact.referenced_dates(sql.SQL("({}) AS f").format(_source_facts(fact))) for fact in FACTS)
    tables.append(compare("dim_date", _rows(src, date_rows(dates)),
                          _rows(wh, _select("dim_date", DATE_COLUMNS)), may_stay=None))
    return tables


def _histories(src: Any, wh: Any, raw: RawZone, compared: dict[str, Any]) -> Iterator[TableReport]:
    events = 0
    newest: tuple[int, int] | None = None
    for fact in FACTS:
        records = raw.records(fact.source)
        positions = {(r["lsn"], r["seq"]) for r in records}
        events += len(positions)
        newest = max(positions | ({newest} if newest else set()), default=None)
        wh.execute(sql.SQL("SELECT source_lsn, commit_ts FROM {} WHERE source_table = %s").format(
            sql.Identifier(MIRROR_SCHEMA, "_ghost_sweeps")), (fact.source,))
        replay = history(records, fact.key, wh.fetchall())
        converted = convert(wh, fact, _source_columns(src, fact.source), replay.versions)
        yield compare_history(fact, replay, converted, _stored_facts(wh, fact))
        yield compare(f"raw zone {fact.source}", _rows(src, _source_facts(fact)),
                      [converted[n] for n in replay.current.values()], against="the raw zone")
    compared["raw_events"] = events
    compared["history_through"] = newest and {"lsn": lsn_text(newest[0]), "seq": newest[1]}


def reconcile(source_dsn: str, warehouse_dsn: str, raw: RawZone | None = None) -> Report:
    """Compare; with ``raw``, fact history against the raw zone too (see the module docstring)."""
    source = connect(source_dsn, "source")
    warehouse = connect(warehouse_dsn, "warehouse")
    try:
        # One snapshot per side: every query of a side sees the same committed state.
        source.set_session(isolation_level="REPEATABLE READ", readonly=True)
        warehouse.set_session(isolation_level="REPEATABLE READ")
        with source.cursor() as src, warehouse.cursor() as wh:
            src.execute("SELECT pg_current_wal_lsn()::text")
            compared: dict[str, Any] = {"source_wal_lsn": src.fetchone()[0], "history": raw is not None}
            tables = _current_state(src, wh)
            for fact in FACTS:
                tables.append(compare(fact.table, _rows(src, _source_facts(fact)),
                                      _rows(wh, _select(fact.current_view, fact.names))))
            if raw is not None:
                tables += _histories(src, wh, raw, compared)
        return Report(tables, compared)
    except psycopg2.Error as exc:
        raise _unreadable(exc, {"source": source, "warehouse": warehouse}) from exc
    finally:
        source.close()  # ends each side's read-only transaction, if its session is still there
        warehouse.close()


def _unreadable(exc: psycopg2.Error, databases: dict[str, Any]) -> DatabaseError | DatabaseUnavailable:
    """The error (the CLI's exit 2, never the 1 of differences) of a database reconcile could not
    read: its server ended the session, or it refused a statement (a warehouse never migrated, a
    missing grant). The database is the one the failed query ran on."""
    conn = getattr(exc.cursor, "connection", None)
    which = next((name for name, c in databases.items() if c is conn), None) or " or ".join(
        name for name, c in databases.items() if c.closed) or "source or warehouse"
    problem = error(exc.pgcode, f"reconcile cannot read the {which} database: {first_line(exc)}")
    if isinstance(problem, DatabaseUnavailable):
        return problem
    missing = which == "warehouse" and exc.pgcode in ("42P01", "3F000")  # undefined table, schema
    return DatabaseError(f"{problem}{'; not migrated? totes-cdc warehouse migrate' if missing else ''}")


def render(report: Report, as_json: bool = False) -> str:
    """The report as text (a line per table, then details of differences) or as JSON."""
    if as_json:
        return json.dumps({"ok": report.ok, "compared": report.compared, "tables": [
            {**asdict(t), "differences": t.differences} for t in report.tables]}, indent=2)
    lines = [f"{'table':<28} {'compared':>9} {'differences':>11}"]
    for t in report.tables:
        lines.append(f"{t.table:<28} {t.compared:>9} {t.differences:>11}")
    for t in report.tables:
        for what, count, sample in ((f"missing from {t.against}", t.missing, t.sample_missing),
                                    (f"extra in {t.against}", t.extra, t.sample_extra),
                                    ("different", t.different, t.sample_different)):
            if count:
                lines.append(f"{t.table}: {count} {what}, first keys: {sample}")
    lines.append(_compared_line(report.compared))
    failing = [t.table for t in report.tables if t.differences]
    lines.append("reconcile: OK, warehouse matches source" if report.ok else
                 f"reconcile: DIFFERENCES in {len(failing)} table(s): {', '.join(failing)}\n"
                 "(under traffic, changes still in flight show as differences too: run it again once "
                 "`totes-cdc status` shows nothing waiting)")
    return "\n".join(lines)


def _compared_line(compared: dict[str, Any]) -> str:
    text = f"compared: the source as of WAL position {compared.get('source_wal_lsn', '?')}"
    if not compared.get("history"):
        return text + "; fact history not compared (no raw zone given, or --no-history)"
    through = compared.get("history_through")
    return text + (f"; fact history: {compared.get('raw_events', 0):,} raw change events, through "
                   + (f"commit LSN {through['lsn']} position {through['seq']}" if through
                      else "none"))

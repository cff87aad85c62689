"""Applying one processed Parquet file to the warehouse, in one transaction, set-based.

The result does not depend on the order files arrive in, nor on which files are applied at the
same time: every version of every row is kept in ``mirror_history.<table>`` (a snapshot read of a
row new to the warehouse in the row's mirror row, until a file concerns the row again: see
lock_keys_sql), and what the warehouse shows is derived from those versions in source-position
order ``(lsn, seq)``, for the rows the file concerns. A handful of statements per file, whatever its size:

1. lock: a file with a truncate takes its table exclusively, a file of rows shared; then the
   file's rows are locked in the mirror, so the versions of one row are worked on by one file at a
   time and each sees the versions the files before it committed.
2. history: the file's versions are added (a replay adds nothing); its truncates are recorded in
   ``mirror._truncations``; the truncate tombstones of the rows concerned are recomputed (a row
   live just before a truncate gets one at the truncate's position).
3. resolve: a delete, a tombstone and a TOAST-unchanged column take their values from the latest
   earlier version that carries them; every version after a newly arrived one is resolved again.
4. facts (order/payment tables): the versions touched, and the ones right after them, are
   appended, corrected or removed (see fact_sync_sql), and ``dim_date`` is extended.
5. the mirror: each row concerned becomes its latest version.
6. the dimensions: exactly the rows the file touches, dependants included, recomputed from the
   mirror and written only when they differ.

``touched`` (a temporary table) collects the versions added, changed or removed by steps 2-3.

A file of snapshot reads (capture's lake snapshot, a resync) is loaded in bulk: the keys it is the
first to bring take a short way from the stage (lock_keys_sql). Its table read's completion marker
applies any listed file not applied yet, then tombstones the rows the read did not see (ghost
rows, ghosts_sql), whichever order the files and the marker come in.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg2 import sql

from totes_cdc.contract import (
    GHOST_SEQ,
    META_COLUMNS,
    OP_DELETE,
    OP_INSERT,
    OP_SNAPSHOT,
    OP_TRUNCATE,
    OP_UPDATE,
    OPS,
    TOMBSTONE_SEQ_FACTOR,
    ContractError,
    arrow_type,
)
from totes_cdc.errors import first_line
from totes_cdc.snapshot_marker import SnapshotMarker, read_marker
from warehouse_loader import latency, pgcopy
from warehouse_loader.derivation import (
    DATE_COLUMNS,
    DEPENDENCIES,
    DIMENSIONS_BY_TABLE,
    FACTS_BY_SOURCE,
    MIRROR_SCHEMA,
    SOURCE_SCHEMA,
    UNKNOWN_CURRENCY,
    Dependency,
    Fact,
    currency_name,
    date_rows,
    iso_currency_parameters,
)
from warehouse_loader.errors import BadFileError, RejectedValuesError, RetryableLoadError

log = logging.getLogger(__name__)

HISTORY_SCHEMA = "mirror_history"
# Every truncate applied, per source table (migration 003).
TRUNCATIONS = sql.Identifier(MIRROR_SCHEMA, "_truncations")
POSITION_COLUMNS = ("source_lsn", "source_seq", "is_deleted")
# The commit time of the snapshot read a mirror row holds while the history may lack it (migration 025).
PENDING_READ = "pending_read_ts"
# Snapshot files applied, and the ghost sweeps of completed snapshot reads (migration 019).
SNAPSHOT_FILES = sql.Identifier(MIRROR_SCHEMA, "_snapshot_files")
GHOST_SWEEPS = sql.Identifier(MIRROR_SCHEMA, "_ghost_sweeps")
# Advisory lock classes (arbitrary project constants), each (class, hashtext(name)):
# pg_advisory_xact_lock(DIMENSION_LOCK_CLASS, dimension) serialises a dimension's recomputes;
DIMENSION_LOCK_CLASS = 0x746F7464
# (TABLE_LOCK_CLASS, source table): see begin_sql(); (ANALYZE_LOCK_CLASS, source table): one
# loader analyses a history table (_analyze_history()).
TABLE_LOCK_CLASS = 0x746F7465
ANALYZE_LOCK_CLASS = 0x746F7461
# Rows staged by one file from which a history table without statistics is analysed at once.
HISTORY_ANALYZE_ROWS = 10_000
# The contract's meta columns as staged: their Arrow types as PostgreSQL types (``_unchanged``, a
# list in the file, is staged as its comma-separated names).
_PG_TYPES = {pa.string(): "text", pa.int64(): "bigint", pa.bool_(): "boolean",
             pa.timestamp("us", tz="UTC"): "timestamptz", pa.list_(pa.string()): "text"}
_STAGED_META = tuple((name, _PG_TYPES[typ]) for name, typ in META_COLUMNS)
# Rows from which a file is staged in binary COPY. The binary writer costs about 1.6 ms per file
# whatever its size (some 30 Arrow calls per column), CSV 0.35 ms plus 3 µs a row; for sales
# orders they cost the same at 1,000 rows (3.3 ms), and binary takes half at 10,000 (BENCHMARKS.md,
# warehouse loader). Live files are mostly far smaller.
BINARY_STAGE_MIN_ROWS = 1_000


@dataclass(frozen=True)
class SourceTable:
    """A source table as the mirror holds it: columns (name, PostgreSQL type) and key columns."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(name for name in self.names if name not in self.key)


_PROCESSED_KEY = re.compile(r"(?:^|/)(?P<schema>[^/.]+)\.(?P<table>[^/]+)/date=[^/]+/[^/]+$")


@dataclass(frozen=True)
class FileResult:
    key: str
    table: str
    rows: int
    fact_rows_appended: int
    latency_ms: float | None  # max(loaded_at - source commit ts) over appended fact rows
    stages: tuple[tuple[str, float], ...] = ()  # latency.record's stage metrics


def table_of(key: str) -> str:
    """The source table of a processed object key ``<prefix><schema>.<table>/date=<date>/<file>``.

    Read from the end, so the prefix stays the processor's and the S3 notification's business.
    """
    match = _PROCESSED_KEY.search(key)
    if match is None or match["schema"] != SOURCE_SCHEMA:
        raise BadFileError(key, f"not a processed file of a {SOURCE_SCHEMA} table (expected "
                                f"<prefix>{SOURCE_SCHEMA}.<table>/date=<date>/<file>)")
    return match["table"]


def source_table(cur: Any, name: str) -> SourceTable | None:
    """The mirror's definition of source table ``name``; None when the warehouse does not mirror it.

    RetryableLoadError when the warehouse has no mirror at all (not migrated yet): the files are
    fine, so they wait rather than go to the dead-letter location.
    """
    # By the table's oid (to_regclass): planned in a third of the time of a join on the names.
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
        "COALESCE(a.attnum = ANY(i.indkey), false) "
        "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
        "WHERE c.oid = to_regclass(format('%%I.%%I', %s, %s)) AND c.relkind = 'r' "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (MIRROR_SCHEMA, name))
    rows = [r for r in cur.fetchall() if r[0] not in (*POSITION_COLUMNS, PENDING_READ)]
    if not rows:
        cur.execute("SELECT to_regnamespace(%s) IS NOT NULL", (MIRROR_SCHEMA,))
        if not cur.fetchone()[0]:
            raise RetryableLoadError("the warehouse is not migrated (no schema mirror): run "
                                     "`totes-cdc warehouse migrate`")
        return None
    return SourceTable(name, tuple((r[0], r[1]) for r in rows), tuple(r[0] for r in rows if r[2]))


def read_parquet(key: str, data: bytes) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise BadFileError(key, f"unreadable Parquet: {exc}") from None


def validate(key: str, table: pa.Table, spec: SourceTable) -> None:
    """BadFileError naming the first way ``table`` departs from the contract for ``spec``.

    Columns the mirror does not hold (added at the source later) are ignored; a file of truncates
    only may carry the metadata columns alone.
    """
    _check_columns(key, table, META_COLUMNS)
    for name in ("_op", "_lsn", "_seq", "_commit_ts"):
        if table[name].null_count:
            raise BadFileError(key, f"column {name!r} has null values")
    bad_ops = pc.unique(pc.filter(table["_op"], pc.invert(pc.is_in(table["_op"], pa.array(OPS)))))
    if len(bad_ops):
        raise BadFileError(key, f"unknown operations in _op: {bad_ops.to_pylist()}")
    rows = pc.filter(table, pc.not_equal(table["_op"], OP_TRUNCATE))
    if not rows.num_rows:
        return
    _check_columns(key, table, [(name, arrow_type(pg)[0]) for name, pg in spec.columns], spec.name)
    for name in spec.key:
        if rows[name].null_count:
            raise BadFileError(key, f"key column {name!r} is null in a row that is not a truncate")


def _check_columns(key: str, table: pa.Table, expected: Sequence[tuple[str, pa.DataType]],
                   source: str = "every processed file") -> None:
    for name, typ in expected:
        if name not in table.column_names:
            raise BadFileError(key, f"column {name!r} is missing (the contract for {source} "
                                    "requires it)")
        found = table.schema.field(name).type
        if found != typ:
            raise BadFileError(key, f"column {name!r} has type {found}, the contract says {typ}")


def stage_copy(table: pa.Table, spec: SourceTable) -> tuple[str, bytes]:
    """The staged columns as COPY data, and its format: ``binary`` when the file has at least
    BINARY_STAGE_MIN_ROWS rows and every column's types are ones warehouse_loader.pgcopy writes
    (those of totesys), else ``csv``. ``_unchanged`` is staged as a comma-separated list of
    names."""
    meta = [pc.binary_join(table[name], ",") if name == "_unchanged" else table[name]
            for name, _ in _STAGED_META]
    staged = pa.table([*meta, *(table[name] for name in spec.names)],
                      names=[*(name for name, _ in _STAGED_META), *spec.names])
    types = [*(typ for _, typ in _STAGED_META), *(typ for _, typ in spec.columns)]
    binary = None if staged.num_rows < BINARY_STAGE_MIN_ROWS else pgcopy.binary_copy(
        [(column.combine_chunks(), typ) for column, typ in zip(staged.columns, types, strict=True)])
    if binary is not None:
        return "binary", binary
    buf = io.BytesIO()
    pa_csv.write_csv(staged, buf, pa_csv.WriteOptions(include_header=False))
    return "csv", buf.getvalue()


def _ids(names: tuple[str, ...], prefix: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(*((prefix, n) if prefix else (n,))) for n in names)


def _eq(left: str, right: str, names: tuple[str, ...]) -> sql.Composed:
    """``left.a = right.a AND ...`` over ``names``."""
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(left, n),
                                                           sql.Identifier(right, n)) for n in names)


def create_temp_sql(spec: SourceTable, fresh: bool) -> list[sql.Composed]:
    """``stage`` (the file's rows), ``touched`` (the versions this file adds, changes or removes;
    a version may be listed twice, every reader takes it as a set) and, with ``fresh``, ``fresh``
    (the keys a file of snapshot reads sees first: see lock_keys_sql). Each temporary table costs
    a file about 0.5 ms to create and drop."""
    keys = [(name, typ) for name, typ in spec.columns if name in spec.key]
    tables = [("stage", [*_STAGED_META, *spec.columns]),
              ("touched", [*keys, ("source_lsn", "bigint"), ("source_seq", "bigint")]),
              *([("fresh", keys)] if fresh else [])]
    # the types are format_type()'s (see _spec): SQL type syntax, identifiers quoted by the server
    return [sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        sql.Identifier(name), sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns))
        for name, columns in tables]


def lock_keys_sql(spec: SourceTable, fresh: bool = False) -> sql.Composed:
    """Lock the file's rows in the mirror (inserting the ones it has never seen) in key order.

    Whatever one file does to a row (its versions, their values, the facts, the mirror row) it
    does holding this lock, so a file applied concurrently with another of the same row sees all
    that file's versions: the versions of a row are resolved one file at a time. ON CONFLICT DO
    UPDATE locks the rows it finds even where its WHERE is false; a row inserted here gets its
    final values from ``mirror_sync_sql``.

    ``fresh``: the keys inserted here go to ``fresh`` (only inserted rows are returned). Such a row
    has no version anywhere in the warehouse (a row's history is only ever written under its
    mirror row), so its one version, a snapshot read, is its final state: the mirror row inserted
    here and one fact (the loader takes this way only while no completed read of the table is
    recorded: see _apply). The read goes to the history only when a later file concerns the row
    (file_pending_reads_sql): until then the mirror row keeps it, with its commit time in
    ``pending_read_ts``. Most rows of an initial load never change, and a load that writes them
    once fewer is faster (migration 025).
    """
    statement = sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET source_lsn = m.source_lsn WHERE false").format(
        _mirror_insert(spec, fresh), _ids(spec.key))
    if not fresh:
        return statement
    return sql.SQL("WITH inserted AS ({} RETURNING {}) INSERT INTO fresh SELECT * FROM inserted").format(
        statement, _ids(spec.key))


def _mirror_insert(spec: SourceTable, fresh: bool) -> sql.Composed:
    """INSERT of the stage's latest version of each key into the mirror; with ``fresh``, as the
    snapshot read its new mirror row keeps (see lock_keys_sql)."""
    pending = (sql.SQL(", {}").format(sql.Identifier(PENDING_READ)), sql.SQL(", _commit_ts")) if fresh else (
        sql.SQL(""), sql.SQL(""))
    return sql.SQL(
        "INSERT INTO {mirror} AS m ({cols}, source_lsn, source_seq, is_deleted{pending}) "
        "SELECT DISTINCT ON ({keys}) {cols}, _lsn, _seq, _op = {delete}{commit_ts} FROM stage "
        "ORDER BY {keys}, _lsn DESC, _seq DESC").format(
            mirror=sql.Identifier(MIRROR_SCHEMA, spec.name), cols=_ids(spec.names),
            keys=_ids(spec.key), delete=sql.Literal(OP_DELETE), pending=pending[0],
            commit_ts=pending[1])


def new_keys_sql(spec: SourceTable) -> sql.Composed:
    """lock_keys_sql with ``fresh`` for a file whose every key is new to the mirror, if it is: a
    plain INSERT, which fails on a key the mirror has (then see _lock_keys). A file of 100,000
    sales orders took 0.15 s to insert so against 0.31 s with ON CONFLICT, which checks each key
    in the index before its insert and confirms each insert in the WAL after it (BENCHMARKS.md,
    bulk load)."""
    return sql.SQL("SAVEPOINT new_keys; {}; RELEASE SAVEPOINT new_keys").format(_mirror_insert(spec, True))


def _not_fresh(spec: SourceTable, fresh: bool) -> sql.Composable:
    """With ``fresh``, a WHERE clause leaving out the stage's (``s``) fresh keys' rows."""
    return sql.SQL(" WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE {})").format(
        _eq("f", "s", spec.key)) if fresh else sql.SQL("")


def file_pending_reads_sql(spec: SourceTable, rows: str, fresh: bool = False) -> sql.Composed:
    """Add to the history the snapshot reads that mirror rows keep for it (see lock_keys_sql), of
    the rows whose versions a statement is about to read: ``rows`` is "every" row, those "below" a
    read at ``%(lsn)s``, or the "stage" keys' (but for the ``fresh`` ones, with ``fresh``). A read
    added before, and still marked in its mirror row, is not added twice.

    The stage's keys are looked up one by one in the mirror's key index (a LATERAL subquery with
    a LIMIT is not flattened into a join): the stage of a small file has no statistics, and as a
    join the lookup was planned as a scan of the whole mirror, 2.9 ms for 15,836 payments."""
    mirror = sql.Identifier(MIRROR_SCHEMA, spec.name)
    pending = sql.Identifier(PENDING_READ)
    sources = {
        "every": sql.SQL("{} m WHERE m.{} IS NOT NULL").format(mirror, pending),
        "below": sql.SQL("{} m WHERE m.{} IS NOT NULL AND m.source_lsn < %(lsn)s").format(mirror, pending),
        "stage": sql.SQL(
            "(SELECT DISTINCT {skeys} FROM stage s{others}) s CROSS JOIN LATERAL (SELECT * FROM {mirror} m "
            "  WHERE {match} AND m.{pending} IS NOT NULL LIMIT 1) m").format(
                skeys=_ids(spec.key, "s"), others=_not_fresh(spec, fresh), mirror=mirror,
                match=_eq("m", "s", spec.key), pending=pending)}
    return sql.SQL(
        "INSERT INTO {history} ({cols}, source_lsn, source_seq, source_op, source_commit_ts, "
        "  unchanged) "
        "SELECT {mcols}, m.source_lsn, m.source_seq, {read}, m.{pending}, '{{}}' FROM {source} "
        "ON CONFLICT DO NOTHING").format(
            history=sql.Identifier(HISTORY_SCHEMA, spec.name), cols=_ids(spec.names),
            mcols=_ids(spec.names, "m"), read=sql.Literal(OP_SNAPSHOT), pending=pending,
            source=sources[rows])


def history_insert_sql(spec: SourceTable, fresh: bool = False) -> sql.Composed:
    """Add the file's versions to the row history (a replay adds nothing) and to ``touched``, after
    the reads their mirror rows keep (file_pending_reads_sql); with ``fresh``, but for the
    ``fresh`` keys' reads, which their new mirror rows keep (see lock_keys_sql)."""
    return sql.SQL(
        "{pending}; "
        "WITH added AS (INSERT INTO {history} ({cols}, source_lsn, source_seq, source_op, "
        "  source_commit_ts, unchanged) "
        "  SELECT {cols}, _lsn, _seq, _op, _commit_ts, CASE WHEN _op = {delete} THEN NULL "
        "    ELSE string_to_array(COALESCE(_unchanged, ''), ',') END FROM stage s{others} "
        "  ON CONFLICT DO NOTHING RETURNING {keys}, source_lsn, source_seq) "
        "INSERT INTO touched SELECT * FROM added").format(
            pending=file_pending_reads_sql(spec, "stage", fresh),
            history=sql.Identifier(HISTORY_SCHEMA, spec.name), cols=_ids(spec.names),
            delete=sql.Literal(OP_DELETE), others=_not_fresh(spec, fresh), keys=_ids(spec.key))


# The operations of a version that holds a live row.
_LIVE = sql.SQL(", ").join(sql.Literal(op) for op in (OP_SNAPSHOT, OP_INSERT, OP_UPDATE))


def _drop_removed_facts(spec: SourceTable, fact_seq: sql.Composable) -> sql.Composable:
    """A CTE deleting the facts of the tombstones in ``removed`` (none for a table without facts):
    a removed tombstone's fact has its key, its lsn and the seq ``fact_seq`` computes from ``r``."""
    fact = FACTS_BY_SOURCE.get(spec.name)
    if not fact:
        return sql.SQL("")
    return sql.SQL(
        ", dropped AS (DELETE FROM {fact} f USING removed r WHERE f.{key} = r.{key} "
        "AND f.source_lsn = r.source_lsn AND f.source_seq = {seq}) ").format(
            fact=sql.Identifier(fact.table), key=sql.Identifier(fact.key), seq=fact_seq)


def tombstones_sql(spec: SourceTable, keys: Callable[[SourceTable], sql.Composable]) -> sql.Composed:
    """Make the truncate tombstones of the rows ``keys(spec)`` selects what in-order application
    gives.

    A truncate tombstones a row when the row's latest change before the truncate is a live version
    (not a delete, not an earlier truncate). Versions and truncates arrive in any order, so the
    tombstones are recomputed from both: missing ones are added (their values resolved later) and
    ones a late delete or truncate makes wrong are removed, with their facts. Both go to ``touched``.
    """
    history = sql.Identifier(HISTORY_SCHEMA, spec.name)
    fact = FACTS_BY_SOURCE.get(spec.name)
    drop_facts = _drop_removed_facts(spec, sql.SQL("-(r.source_seq * {factor} + r.{key})").format(
        factor=sql.Literal(TOMBSTONE_SEQ_FACTOR), key=sql.Identifier(fact.key)) if fact else sql.SQL(""))
    return sql.SQL(
        "WITH k AS ({keys}), "
        "events AS ("
        "  SELECT {hkeys}, h.source_lsn, h.source_seq, h.source_op, NULL::timestamptz AS ts, "
        "    false AS is_truncate FROM {history} h JOIN k USING ({key}) WHERE h.source_op <> {t} "
        "  UNION ALL SELECT {kkeys}, t.source_lsn, t.source_seq, {t}, t.source_commit_ts, true "
        "  FROM k CROSS JOIN {truncations} t WHERE t.source_table = {table}), "
        "wanted AS (SELECT * FROM ("
        "    SELECT *, lag(source_op) OVER (PARTITION BY {key} "
        "      ORDER BY source_lsn, source_seq, is_truncate) AS before FROM events) e "
        "  WHERE is_truncate AND before IN ({live})), "
        "removed AS (DELETE FROM {history} h USING k WHERE {hk} AND h.source_op = {t} "
        "  AND NOT EXISTS (SELECT 1 FROM wanted w WHERE {hw} AND w.source_lsn = h.source_lsn "
        "    AND w.source_seq = h.source_seq) "
        "  RETURNING {hkeys}, h.source_lsn, h.source_seq), "
        "added AS (INSERT INTO {history} ({key}, source_lsn, source_seq, source_op, "
        "    source_commit_ts) SELECT {key}, source_lsn, source_seq, {t}, ts FROM wanted "
        "  ON CONFLICT DO NOTHING RETURNING {key}, source_lsn, source_seq){drop_facts}"
        "INSERT INTO touched SELECT * FROM removed UNION ALL SELECT * FROM added").format(
            keys=keys(spec), key=_ids(spec.key), hkeys=_ids(spec.key, "h"), kkeys=_ids(spec.key, "k"),
            history=history, table=sql.Literal(spec.name), hk=_eq("h", "k", spec.key),
            hw=_eq("h", "w", spec.key), drop_facts=drop_facts, live=_LIVE,
            t=sql.Literal(OP_TRUNCATE), truncations=TRUNCATIONS)


def dependent_sql(spec: SourceTable) -> sql.Composed:
    """``FROM ... WHERE``: the versions (``h``) that do not carry all their values, at or after a
    touched version (``t``) of their row: those whose values a touched version may change."""
    return sql.SQL(
        "FROM {history} h JOIN touched t USING ({keys}) WHERE h.unchanged IS DISTINCT FROM '{{}}' "
        "AND (h.source_lsn, h.source_seq) >= (t.source_lsn, t.source_seq)").format(
            history=sql.Identifier(HISTORY_SCHEMA, spec.name), keys=_ids(spec.key))


def dependents_check_sql(spec: SourceTable) -> sql.Composed:
    """ANALYZE ``touched``, then one row: whether any version depends on a touched one."""
    return sql.SQL("ANALYZE touched; SELECT EXISTS (SELECT 1 {})").format(dependent_sql(spec))


def resolve_sql(spec: SourceTable) -> sql.Composed:
    """Resolve the values of every version of a row that depends on a touched one, as of its
    position: a column a version does not carry (``unchanged``; all of them for a delete or a
    tombstone) takes the value of the latest earlier version that carries it, null when none has
    arrived yet. Versions whose values change go to ``touched``.

    For each non-key column, ``_g<n>`` counts the versions so far that carry it; the value is the
    first of its group (the carrying version).
    """
    history = sql.Identifier(HISTORY_SCHEMA, spec.name)
    groups, values = [], []
    for n, column in enumerate(spec.others):
        group = sql.Identifier(f"_g{n}")
        groups.append(sql.SQL(
            ", count(*) FILTER (WHERE NOT {name} = ANY(unchanged)) OVER w AS {group}").format(
                name=sql.Literal(column), group=group))
        values.append(sql.SQL(
            ", CASE WHEN {group} > 0 THEN first_value({col}) OVER "
            "(PARTITION BY {keys}, {group} ORDER BY source_lsn, source_seq) END AS {col}").format(
                group=group, col=sql.Identifier(column), keys=_ids(spec.key)))
    return sql.SQL(
        "WITH dependent AS (SELECT DISTINCT {hkeys} {dependent}), "
        "resolved AS (SELECT _row, unchanged{values} FROM ("
        "  SELECT h.*, h.ctid AS _row{groups} FROM {history} h JOIN dependent USING ({keys}) "
        "  WINDOW w AS (PARTITION BY {keys} ORDER BY source_lsn, source_seq)) v), "
        # Joined back by ctid: the very version read, with no second lookup by key and position.
        "updated AS (UPDATE {history} h SET {sets} FROM resolved r "
        "  WHERE h.ctid = r._row AND r.unchanged IS DISTINCT FROM '{{}}' "
        "  AND ({hothers}) IS DISTINCT FROM ({rothers}) "
        "  RETURNING {hkeys}, h.source_lsn, h.source_seq) "
        "INSERT INTO touched SELECT * FROM updated").format(
            history=history, keys=_ids(spec.key), hkeys=_ids(spec.key, "h"),
            dependent=dependent_sql(spec), values=sql.SQL("").join(values),
            groups=sql.SQL("").join(groups),
            sets=sql.SQL(", ").join(sql.SQL("{c} = r.{c}").format(c=sql.Identifier(c))
                                    for c in spec.others),
            hothers=_ids(spec.others, "h"),
            rothers=_ids(spec.others, "r"))


def mirror_sync_sql(spec: SourceTable) -> sql.Composed:
    """Make the mirror row of each touched key its latest version (a delete or tombstone: deleted)."""
    return sql.SQL(
        "INSERT INTO {mirror} AS m ({cols}, source_lsn, source_seq, is_deleted) "
        "SELECT DISTINCT ON ({keys}) {cols}, source_lsn, source_seq, source_op IN ({deleted}) "
        "FROM {history} WHERE ({keys}) IN (SELECT {keys} FROM touched) "
        "ORDER BY {keys}, source_lsn DESC, source_seq DESC "
        "ON CONFLICT ({keys}) DO UPDATE SET {sets}, source_lsn = EXCLUDED.source_lsn, "
        "source_seq = EXCLUDED.source_seq, is_deleted = EXCLUDED.is_deleted, {pending} = NULL "
        "WHERE ({current}) IS DISTINCT FROM ({new})").format(
            mirror=sql.Identifier(MIRROR_SCHEMA, spec.name), cols=_ids(spec.names),
            keys=_ids(spec.key), history=sql.Identifier(HISTORY_SCHEMA, spec.name),
            deleted=sql.SQL(", ").join(sql.Literal(op) for op in (OP_DELETE, OP_TRUNCATE)),
            sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                    for c in spec.others),
            current=_ids((*spec.others, *POSITION_COLUMNS), "m"),
            new=_ids((*spec.others, *POSITION_COLUMNS), "excluded"), pending=sql.Identifier(PENDING_READ))


_FACT_META = ("source_op", "source_lsn", "source_seq", "source_commit_ts", "is_deleted")


def fact_sync_sql(fact: Fact) -> sql.Composed:
    """Make the facts of the touched rows what in-order application gives; extend dim_date.

    Every version of a touched row that is touched or follows a touched position (its predecessor
    may have changed) is compared with the facts: appended when missing, its values corrected when
    they differ (a delete or tombstone that got its values from a late earlier version), removed
    when it is a snapshot read that must not be there. A truncate's tombstone is a deletion; since
    one truncate has one position, its fact carries ``source_seq = -(truncate seq * 2^31 + row id)``
    (see fact_version_seq() in the schema).

    A snapshot read identical to the version just before it, itself a live version (a read, an
    insert, an update), is not a fact: a resync re-reads every row, and a resumed snapshot re-reads
    the ranges whose progress was not saved (at a new snapshot position); neither changed the row.
    A re-read that differs, or follows a deletion (a delete, a truncate or a ghost tombstone), is
    a real new version. Whether a read is such a repeat depends on the version before it, which
    may arrive later: hence the removal.

    The versions migration 004 carried over from the mirror (no commit time) are no events of
    their own: whatever facts they had were written before, and are left as they are.

    Returns one row: (fact rows appended, max latency ms over them).
    """
    key = sql.Identifier(fact.key)  # the source table's key: the three facts name it alike
    history = sql.Identifier(HISTORY_SCHEMA, fact.source)
    extra = tuple(sql.SQL(e).format(d=sql.Literal(OP_DELETE), t=sql.Literal(OP_TRUNCATE),
                                    factor=sql.Literal(TOMBSTONE_SEQ_FACTOR), key=key) for e in (
        "CASE WHEN source_op = {t} THEN {d} ELSE source_op END", "source_lsn",
        "CASE WHEN source_op = {t} THEN -(source_seq * {factor} + {key}) ELSE source_seq END",
        "source_commit_ts", "source_op IN ({d}, {t})", "source_op", "source_seq"))
    rows = sql.SQL("(SELECT * FROM {} WHERE {} IN (SELECT {} FROM touched)) h").format(
        history, key, key)
    return sql.SQL(
        "WITH converted ({cols}, _op, _seq) AS ({converted}), "
        "ordered AS (SELECT c.*, lag(_op) OVER w AS _prev_op, lag(({names})) OVER w AS _prev, "
        "  lag(source_lsn) OVER w AS _prev_lsn, lag(_seq) OVER w AS _prev_seq FROM converted c "
        "  WINDOW w AS (PARTITION BY {key} ORDER BY source_lsn, _seq)), "
        "versions AS MATERIALIZED (SELECT {cols}, _op = {r} AND _prev_op IN ({live}) "
        "  AND ({names}) IS NOT DISTINCT FROM _prev AS _repeat FROM ordered o "
        "  WHERE o.source_commit_ts IS NOT NULL AND EXISTS (SELECT 1 FROM touched t "
        "    WHERE t.{key} = o.{key} "
        "    AND (t.source_lsn, t.source_seq) <= (o.source_lsn, o._seq) AND (o._prev_lsn IS NULL "
        "    OR (t.source_lsn, t.source_seq) >= (o._prev_lsn, o._prev_seq)))), "
        "appended AS (INSERT INTO {fact} ({cols}) SELECT {cols} FROM versions WHERE NOT _repeat "
        "  ON CONFLICT ({key}, source_lsn, fact_version_seq(source_seq), source_seq) DO NOTHING "
        "  RETURNING loaded_at, source_commit_ts), "
        "repeats AS (DELETE FROM {fact} f USING versions v WHERE v._repeat AND f.{key} = v.{key} "
        "  AND f.source_lsn = v.source_lsn AND f.source_seq = v.source_seq), "
        "repaired AS (UPDATE {fact} f SET {sets} FROM versions v WHERE NOT v._repeat "
        "  AND f.{key} = v.{key} AND f.source_lsn = v.source_lsn AND f.source_seq = v.source_seq "
        "  AND ({fnames}) IS DISTINCT FROM ({vnames})), "
        "dates AS (INSERT INTO dim_date ({date_cols}) {dates} ON CONFLICT (date_id) DO NOTHING) "
        "SELECT count(*), max(extract(epoch FROM loaded_at - source_commit_ts) * 1000) "
        "FROM appended").format(
            cols=_ids((*fact.names, *_FACT_META)), converted=fact.convert(rows, extra),
            names=_ids(fact.names), key=key, r=sql.Literal(OP_SNAPSHOT), live=_LIVE,
            fact=sql.Identifier(fact.table),
            sets=sql.SQL(", ").join(sql.SQL("{c} = v.{c}").format(c=sql.Identifier(c))
                                    for c in fact.names),
            fnames=_ids(fact.names, "f"), vnames=_ids(fact.names, "v"),
            date_cols=_ids(DATE_COLUMNS),
            dates=date_rows(fact.referenced_dates(sql.Identifier("versions"))))


def fresh_facts_sql(fact: Fact, all_fresh: bool = False) -> sql.Composed:
    """Append the facts of the ``fresh`` keys' reads (see lock_keys_sql) straight from ``stage``,
    and extend dim_date: one version each, with no version before it to compare with.
    ``all_fresh``: every key of the stage is fresh (read with no join with ``fresh``).

    No ON CONFLICT: a fresh key has no fact (its mirror row was inserted by this transaction, and
    facts are only written under it), and its one read is its only version in the file; migration
    022's trigger relies on the same when it inserts the fresh keys' current rows as they are.
    Without it, and returning only what is read, a file of 100,000 reads took about 0.2 s less.

    Returns one row: (fact rows appended, max latency ms over them).
    """
    key = sql.Identifier(fact.key)
    reads = sql.SQL("stage h") if all_fresh else sql.SQL(
        "(SELECT s.* FROM stage s JOIN fresh USING ({})) h").format(key)
    meta = tuple(sql.SQL(name) for name in ("_op", "_lsn", "_seq", "_commit_ts", "false"))
    return sql.SQL(
        "WITH appended AS (INSERT INTO {fact} ({cols}) {converted} "
        "  RETURNING loaded_at, source_commit_ts, {dated}), "
        "dates AS (INSERT INTO dim_date ({date_cols}) {dates} ON CONFLICT (date_id) DO NOTHING) "
        "SELECT count(*), max(extract(epoch FROM loaded_at - source_commit_ts) * 1000) "
        "FROM appended").format(
            fact=sql.Identifier(fact.table), cols=_ids((*fact.names, *_FACT_META)),
            converted=fact.convert(reads, meta), dated=_ids(fact.date_columns),
            date_cols=_ids(DATE_COLUMNS),
            dates=date_rows(fact.referenced_dates(sql.Identifier("appended"))))


def ghosts_sql(spec: SourceTable, keys: Callable[[SourceTable], sql.Composable]) -> sql.Composed:
    """Make the ghost tombstones of the rows ``keys(spec)`` selects what the completed reads call
    for.

    A completed read at lsn S (``_ghost_sweeps``) saw every row that existed at S, and every file
    of it was applied before its sweep was recorded. So a row's ghost tombstone is at
    (S, GHOST_SEQ) exactly when its latest real version below lsn S (not a tombstone) is live,
    with no truncate of the table after it and below S; its first real version from lsn S on
    (its read at S included) is none or an insert: nothing shows the row existed at S; and no
    other completed read lies between that live version and S: the first read that missed the
    row ends it, and the later ones find it ended. Only the real versions, the truncates
    (``_truncations``: their tombstones are derived from the ghosts, see _derive) and the sweeps
    decide, never the tombstones made before, so the result is the same whatever order versions
    and markers arrived in. The tombstones are recomputed like the truncates': missing ones
    added (their values resolved later), wrong ones removed with their facts; both go to
    ``touched``.
    """
    history = sql.Identifier(HISTORY_SCHEMA, spec.name)
    drop_facts = _drop_removed_facts(spec, sql.SQL("r.source_seq"))
    return sql.SQL(
        "WITH k AS ({keys}), "
        "c AS (SELECT {kkeys}, w.source_lsn AS s, w.commit_ts, "
        "  COALESCE(p.live AND NOT EXISTS (SELECT 1 FROM {sweeps} e WHERE e.source_table = {table} "
        "    AND e.source_lsn > p.source_lsn AND e.source_lsn < w.source_lsn), false) "
        "  AND COALESCE((SELECT n.source_op FROM {history} n WHERE {nk} "
        "    AND n.source_lsn >= w.source_lsn AND n.source_op <> {t} AND n.source_seq <> {ghost} "
        "    ORDER BY n.source_lsn, n.source_seq LIMIT 1) = {insert}, true) AS wanted "
        "  FROM k CROSS JOIN {sweeps} w "
        "  LEFT JOIN LATERAL (SELECT p.source_lsn, p.source_op IN ({live}) AND NOT EXISTS ("
        "      SELECT 1 FROM {truncations} tr WHERE tr.source_table = {table} "
        "      AND tr.source_lsn < w.source_lsn "
        "      AND (tr.source_lsn, tr.source_seq) >= (p.source_lsn, p.source_seq)) AS live "
        "    FROM {history} p WHERE {pk} AND p.source_lsn < w.source_lsn AND p.source_op <> {t} "
        "    AND p.source_seq <> {ghost} ORDER BY p.source_lsn DESC, p.source_seq DESC LIMIT 1) p ON true "
        "  WHERE w.source_table = {table}), "
        "removed AS (DELETE FROM {history} h USING c WHERE {hc} AND h.source_lsn = c.s "
        "  AND h.source_seq = {ghost} AND NOT c.wanted RETURNING {hkeys}, h.source_lsn, h.source_seq), "
        "added AS (INSERT INTO {history} ({key}, source_lsn, source_seq, source_op, source_commit_ts) "
        "  SELECT {key}, s, {ghost}, {delete}, commit_ts FROM c WHERE wanted "
        "  ON CONFLICT DO NOTHING RETURNING {key}, source_lsn, source_seq){drop_facts}"
        "INSERT INTO touched SELECT * FROM removed UNION ALL SELECT * FROM added").format(
            keys=keys(spec), key=_ids(spec.key), kkeys=_ids(spec.key, "k"), hkeys=_ids(spec.key, "h"),
            history=history, pk=_eq("p", "k", spec.key), nk=_eq("n", "k", spec.key),
            hc=_eq("h", "c", spec.key), ghost=sql.Literal(GHOST_SEQ), live=_LIVE,
            t=sql.Literal(OP_TRUNCATE), insert=sql.Literal(OP_INSERT), delete=sql.Literal(OP_DELETE),
            sweeps=GHOST_SWEEPS, truncations=TRUNCATIONS, table=sql.Literal(spec.name),
            drop_facts=drop_facts)


def ghost_candidates_sql(spec: SourceTable) -> sql.Composed:
    """The rows a completed read at ``%(lsn)s`` may have missed, locked in key order: live in the
    mirror below it (a row it saw has a version at or above it), or ended by the ghost tombstone
    of a later read (whose sweep came first: the tombstone moves to this read)."""
    return sql.SQL("SELECT {keys} FROM {mirror} WHERE (NOT is_deleted AND source_lsn < %(lsn)s) "
                   "OR (is_deleted AND source_seq = {ghost} AND source_lsn > %(lsn)s) "
                   "ORDER BY {keys} FOR UPDATE").format(
                       keys=_ids(spec.key), mirror=sql.Identifier(MIRROR_SCHEMA, spec.name),
                       ghost=sql.Literal(GHOST_SEQ))


def dimension_upsert_sql(dep: Dependency) -> sql.Composed:
    """Upsert the rows of ``dep``'s dimension that the changes of its source rows in ``touched``
    affect. A source row only ever deleted (its values unknown) gets no dimension row: one with a
    live version, in its history or kept by its mirror row (a read), does."""
    dim = DIMENSIONS_BY_TABLE[dep.dimension]
    return sql.SQL(
        "INSERT INTO {dim} AS t ({cols}) SELECT * FROM ({derive}) AS d ({cols}) "
        "WHERE d.{key} IN ({keys}) AND (EXISTS (SELECT 1 FROM {history} h "
        "  WHERE h.{source_key} = d.{key} AND h.source_op IN ({live})) "
        "  OR EXISTS (SELECT 1 FROM {mirror} m WHERE m.{source_key} = d.{key} "
        "    AND m.{pending} IS NOT NULL)) "
        "ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE ({current}) IS DISTINCT FROM ({new})").format(
            dim=sql.Identifier(dim.table), cols=_ids(dim.all_columns),
            derive=dim.derive(MIRROR_SCHEMA), key=sql.Identifier(dim.key),
            history=sql.Identifier(HISTORY_SCHEMA, dim.source),
            mirror=sql.Identifier(MIRROR_SCHEMA, dim.source), pending=sql.Identifier(PENDING_READ),
            source_key=sql.Identifier(dim.source_key), live=_LIVE,
            keys=dep.affected(MIRROR_SCHEMA, sql.Identifier("touched")),
            sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                    for c in dim.columns),
            current=_ids(dim.columns, "t"), new=_ids(dim.columns, "excluded"))


class _Totals:
    def __init__(self) -> None:
        self.appended = 0
        self.latency_ms: float | None = None

    def add(self, row: tuple[int, Any]) -> None:
        self.appended += row[0]
        if row[1] is not None:
            self.latency_ms = max(self.latency_ms or 0.0, float(row[1]))


def begin_sql(spec: SourceTable, exclusive: bool, fresh: bool) -> sql.Composed:
    """A transaction's first statements, in one round trip: the table's lock, JIT off, the
    temporary tables (create_temp_sql), then one row: whether a truncate of the table, and a
    completed read of it, are recorded.

    The lock serialises a file holding a truncate against every other file of its table. A
    truncate tombstones the rows the warehouse holds, and a file of rows applies the truncates
    recorded before it: at READ COMMITTED neither would see the other's uncommitted work, so a row
    older than a truncate applied concurrently would stay current. Files of rows take the lock
    shared (they run concurrently with each other), a file with a truncate, and a sweep,
    exclusive: whichever commits second sees the other's rows or truncate. The records are read
    holding it: both are written only under it, exclusively, so neither changes until the commit.

    JIT off: the planner's guesses for tables without statistics run to millions of rows, and
    compiling for them costs a second per statement.
    """
    lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    return sql.SQL("; ").join([
        sql.SQL("SELECT {lock}({lock_class}, hashtext({table}))").format(
            lock=sql.Identifier(lock), lock_class=sql.Literal(TABLE_LOCK_CLASS),
            table=sql.Literal(spec.name)),
        sql.SQL("SET LOCAL jit = off"), *create_temp_sql(spec, fresh),
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {truncations} WHERE source_table = {table}), "
                "EXISTS (SELECT 1 FROM {sweeps} WHERE source_table = {table})").format(
                    truncations=TRUNCATIONS, sweeps=GHOST_SWEEPS, table=sql.Literal(spec.name))])


# Statements as sent, by builder and arguments. Composing and quoting the statements cost a small
# file about 1 ms; their text depends only on the arguments (the names are quoted the same on
# every connection), which are few: source tables, facts, dimensions, flags.
_RENDERED: dict[tuple[Any, ...], str] = {}


def _statement(cur: Any, builder: Callable[..., sql.Composable], *args: Any) -> str:
    """``builder(*args)`` rendered, once per process."""
    key = (builder, *args)
    if key not in _RENDERED:
        _RENDERED[key] = builder(*args).as_string(cur)
    return _RENDERED[key]


def _begin(cur: Any, spec: SourceTable, *, exclusive: bool, fresh: bool) -> tuple[bool, bool]:
    """Run begin_sql: (a truncate of the table is recorded, a completed read of it is)."""
    cur.execute(_statement(cur, begin_sql, spec, exclusive, fresh))
    truncated, swept = cur.fetchone()
    return bool(truncated), bool(swept)


def _analyze_history(cur: Any, spec: SourceTable) -> None:
    """ANALYZE the table's history once, when a bulk load gives it its first many rows.

    Without statistics (until autovacuum comes round) small files would be planned to hash the
    whole history; statistics taken once scale with the table (the planner scales row counts by
    its size, and key distinctness is kept as a fraction). One loader analyses, the others do not
    wait: ANALYZE's lock is held to the commit and would serialise concurrent files of the table.
    """
    cur.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = %s AND tablename = %s) "
                "AND pg_try_advisory_xact_lock(%s, hashtext(%s))",
                (HISTORY_SCHEMA, spec.name, ANALYZE_LOCK_CLASS, spec.name))
    if cur.fetchone()[0]:
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(HISTORY_SCHEMA, spec.name)))


def _lock_keys(cur: Any, spec: SourceTable, staged: int, fresh: bool) -> bool:
    """Run lock_keys_sql for the ``staged`` rows: whether ``fresh`` and every key was new to the
    mirror (then ``fresh`` is left empty: the stage has those keys). With ``fresh``, new_keys_sql
    first: most files of an initial load have no key the mirror has, and a file that has one (a
    replayed file, a row a live file brought first) is rolled back to before it.

    Such a file's statements then join the stage with ``fresh``, the history and the mirror: they
    are planned from the stage's real size and key distinctness, not a guess (the other columns'
    statistics cost a file of 100,000 reads about 0.1 s, and no plan reads them). With the sorts
    and hashes in memory (_apply), 1.07 times as fast, side by side (BENCHMARKS.md, bulk load).
    When every key is new, no plan depends on them, and they are not taken (30 ms a file)."""
    if fresh:
        try:
            cur.execute(_statement(cur, new_keys_sql, spec))
            return True
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT new_keys")
        cur.execute(sql.SQL("ANALYZE stage ({})").format(_ids(spec.key)))
    cur.execute(_statement(cur, lock_keys_sql, spec, fresh))
    return fresh and cur.rowcount == staged


def _derive(cur: Any, spec: SourceTable, staged: int, *, every_row: bool, fresh: bool,
            truncated: bool, ghost_keys: Callable[[SourceTable], sql.Composable] | None) -> _Totals:
    """Steps 1-6 of the module docstring for the versions in ``stage`` (``staged`` rows).

    ``every_row``: a file with a truncate, or a sweep: it concerns every row of the table. ``fresh``: a
    file of snapshot reads, one per key, whose keys new to the warehouse take the short way (see
    lock_keys_sql); the others, as any file's. ``truncated``: a truncate of the table is recorded.
    ``ghost_keys``: the rows whose ghost tombstones are recomputed (None: no completed read of the
    table is recorded).
    """
    totals = _Totals()
    all_fresh = False
    if staged:
        all_fresh = _lock_keys(cur, spec, staged, fresh)  # an initial load's file: no key seen before
        if not all_fresh:  # (its reads are all kept by their new mirror rows)
            cur.execute(_statement(cur, history_insert_sql, spec, fresh))
            if staged >= HISTORY_ANALYZE_ROWS:
                _analyze_history(cur, spec)
    # The truncate tombstones read the versions of the rows they concern: the fresh keys' reads
    # are kept by their mirror rows (history_insert_sql added the others').
    if truncated and (every_row or fresh):
        cur.execute(_statement(cur, file_pending_reads_sql, spec, "every" if every_row else "stage"))
    if ghost_keys is not None:  # before the truncates': a ghost tombstone is a deletion a truncate follows
        cur.execute(_statement(cur, ghosts_sql, spec, ghost_keys))
    if truncated:
        # A truncate concerns every row of the table; a file of rows, its own rows.
        cur.execute(_statement(cur, tombstones_sql, spec, _every_key if every_row else _stage_keys))
    # Statistics let the planner choose index lookups into the history, mirror and facts for a
    # small batch (a temporary table has none, and is assumed large). Then whether a version
    # depends on a touched one: most files carry all their values and no version after them
    # lacks any, and the check is far cheaper to plan than the resolution.
    cur.execute(_statement(cur, dependents_check_sql, spec))
    if cur.fetchone()[0]:
        cur.execute(_statement(cur, resolve_sql, spec))
    if fact := FACTS_BY_SOURCE.get(spec.name):
        if fresh:
            # The first versions of their ids: the fact table's trigger makes them current as they
            # are (migration 022).
            cur.execute("SET LOCAL totes_cdc.first_versions = on")
            cur.execute(_statement(cur, fresh_facts_sql, fact, all_fresh))
            totals.add(cur.fetchone())
            cur.execute("SET LOCAL totes_cdc.first_versions = off")
        cur.execute(_statement(cur, fact_sync_sql, fact))
        totals.add(cur.fetchone())
    cur.execute(_statement(cur, mirror_sync_sql, spec))
    dependencies = [dep for dep in DEPENDENCIES if dep.source == spec.name]
    if dependencies:
        if fresh:  # the fresh keys' mirror rows are final: their dimension rows are due too
            cur.execute(sql.SQL("INSERT INTO touched ({0}) SELECT {0} FROM {1}").format(
                _ids(spec.key), sql.Identifier("stage" if all_fresh else "fresh")))
        # Files applied concurrently (several Lambda instances) may touch the same dimension rows
        # from different source tables (an address and a counterparty): recomputing one at a time,
        # each statement sees the other's committed mirror rows, so the last write is complete.
        # One lock per dimension, taken in name order: files of other dimensions do not wait.
        for dimension in sorted({dep.dimension for dep in dependencies}):
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        (DIMENSION_LOCK_CLASS, dimension))
    for dep in dependencies:
        cur.execute(_statement(cur, dimension_upsert_sql, dep), iso_currency_parameters())
    return totals


def is_snapshot_file(table: pa.Table, spec: SourceTable) -> bool:
    """Whether a file holds snapshot reads only, one per key (capture's lake snapshot writes such
    files): then it is loaded in bulk (see lock_keys_sql)."""
    if not table.num_rows or not pc.all(pc.equal(table["_op"], OP_SNAPSHOT)).as_py():
        return False
    keys = table.select(list(spec.key))
    return bool(keys.group_by(list(spec.key)).aggregate([]).num_rows == table.num_rows)


def _every_key(spec: SourceTable) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {}").format(_ids(spec.key), sql.Identifier(MIRROR_SCHEMA, spec.name))


def _touched_keys(spec: SourceTable) -> sql.Composed:
    return sql.SQL("SELECT DISTINCT {} FROM touched").format(_ids(spec.key))


def _stage_keys(spec: SourceTable) -> sql.Composed:
    return sql.SQL("SELECT {0} FROM stage GROUP BY {0}").format(_ids(spec.key))


def _apply(cur: Any, spec: SourceTable, table: pa.Table) -> _Totals:
    """Apply the file's versions and truncates: see the module docstring."""
    is_truncate = pc.equal(table["_op"], OP_TRUNCATE)
    truncates = pc.filter(table, is_truncate)
    rows = pc.filter(table, pc.invert(is_truncate))
    reads = is_snapshot_file(rows, spec)
    truncated, swept = _begin(cur, spec, exclusive=truncates.num_rows > 0, fresh=reads)
    # After a completed read, its sweep calls for a ghost tombstone of every row it did not see, a
    # key new to the warehouse too (a read below it arriving late): a snapshot file takes the
    # general way then, where the ghosts are recomputed.
    snapshot = reads and not swept
    if rows.num_rows:
        copy_format, data = stage_copy(rows, spec)
        cur.copy_expert(f"COPY stage FROM STDIN WITH (FORMAT {copy_format})", io.BytesIO(data))
        if snapshot:
            # A bulk load: its sorts and hashes of the whole file in memory, not on disk (and see
            # _lock_keys).
            cur.execute("SET LOCAL work_mem = '64MB'")
    for lsn, seq, commit_ts in zip(*(truncates[c].to_pylist() for c in ("_lsn", "_seq", "_commit_ts")),
                                   strict=True):
        cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
            TRUNCATIONS), (spec.name, lsn, seq, commit_ts))
        log.warning("truncate of %s.%s at lsn %s applied: its rows are marked deleted",
                    SOURCE_SCHEMA, spec.name, lsn)
    # A truncate below a sweep ends the rows it would have called ghosts: all are checked then.
    ghost_keys = (_every_key if truncates.num_rows else _touched_keys) if swept else None
    return _derive(cur, spec, rows.num_rows, every_row=truncates.num_rows > 0, fresh=snapshot,
                   truncated=truncated or truncates.num_rows > 0, ghost_keys=ghost_keys)


def _sweep(cur: Any, spec: SourceTable, marker: SnapshotMarker) -> tuple[int, _Totals]:
    """Record ``marker``'s read as complete and tombstone its ghost rows: (ghosts, totals).

    Exclusive on the table, like a truncate: a file of the table applied meanwhile either commits
    before (and its rows are candidates) or sees the sweep (and checks its own rows).
    """
    truncated, _ = _begin(cur, spec, exclusive=True, fresh=False)
    cur.execute(sql.SQL(
        "INSERT INTO {} (source_table, source_lsn, commit_ts) SELECT %(table)s, %(lsn)s, "
        "COALESCE((SELECT min(commit_ts) FROM {} WHERE file_key = ANY(%(files)s)), "
        "transaction_timestamp()) ON CONFLICT DO NOTHING").format(GHOST_SWEEPS, SNAPSHOT_FILES),
        {"table": spec.name, "lsn": marker.lsn, "files": list(marker.files)})
    # The candidates' versions: a read kept by its mirror row below the read is one (ghost_candidates_sql).
    cur.execute(_statement(cur, file_pending_reads_sql, spec, "below"),
                {"lsn": marker.lsn})
    cur.execute(_statement(cur, ghosts_sql, spec, ghost_candidates_sql), {"lsn": marker.lsn})
    # touched holds the tombstones added and those removed: the added are in the history
    cur.execute(sql.SQL("SELECT count(*) FROM touched t WHERE EXISTS (SELECT 1 FROM {} h WHERE {} "
                        "AND h.source_lsn = t.source_lsn AND h.source_seq = t.source_seq)").format(
                            sql.Identifier(HISTORY_SCHEMA, spec.name), _eq("h", "t", spec.key)))
    ghosts = cur.fetchone()[0]
    # every_row: the truncate tombstones of the table are recomputed, the ghosts' included; the
    # ghosts of every row that may need one are just done (ghosts_sql decides in one pass).
    return ghosts, _derive(cur, spec, 0, every_row=True, fresh=False, truncated=truncated,
                           ghost_keys=None)


def warn_unknown_currencies(key: str, table: pa.Table) -> None:
    for code in pc.unique(pc.drop_null(table["currency_code"])).to_pylist():
        if currency_name(code) is None:
            log.warning("currency code %r in %s is not in ISO 4217: dim_currency names it %r",
                        code, key, UNKNOWN_CURRENCY.format(code))


@contextmanager
def _transaction(conn: Any, key: str) -> Iterator[Any]:
    """A cursor in one transaction; the database's errors as the loader's (BadFileError for
    values the warehouse rejects, RetryableLoadError for the rest)."""
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except psycopg2.DataError as exc:
        raise RejectedValuesError(key, f"the warehouse rejected its values: {first_line(exc)}") from None
    except psycopg2.Error as exc:
        raise RetryableLoadError(f"applying {key} failed: {first_line(exc)}") from exc


def _spec(cur: Any, key: str, name: str) -> SourceTable:
    spec = source_table(cur, name)
    if spec is None:
        raise BadFileError(key, f"unknown table {SOURCE_SCHEMA}.{name}: the warehouse does not mirror it")
    return spec


def apply_file(conn: Any, key: str, data: bytes,
               fetch: Callable[[str], bytes] | None = None) -> FileResult:
    """Apply the processed file ``key`` (its bytes ``data``) in one transaction.

    A snapshot's completion marker (totes_cdc.snapshot_marker) is applied by :func:`apply_marker`,
    which reads the files it lists that are not applied yet with ``fetch`` (key -> bytes).
    BadFileError when the file breaks the contract (or the warehouse rejects its values);
    RetryableLoadError for anything a retry may fix. Applying a file twice changes nothing.
    """
    name = table_of(key)
    table = read_parquet(key, data)
    try:
        marker = read_marker(table.schema.metadata)
    except ContractError as exc:
        raise BadFileError(key, str(exc)) from None
    if marker is not None:
        return apply_marker(conn, key, name, marker, fetch)
    return _apply_rows(conn, key, name, table)


def _apply_rows(conn: Any, key: str, name: str, table: pa.Table) -> FileResult:
    """Apply ``table``, rows of the file ``key`` of table ``name``, in one transaction."""
    with _transaction(conn, key) as cur:
        spec = _spec(cur, key, name)
        validate(key, table, spec)
        if "currency_code" in table.column_names:
            warn_unknown_currencies(key, table)
        totals = _apply(cur, spec, table)
        if pc.all(pc.equal(table["_op"], OP_SNAPSHOT)).as_py() is not False:
            # Snapshot reads (or none): the completion marker of their read looks for them here.
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING").format(
                SNAPSHOT_FILES), (key, name, pc.min(table["_commit_ts"]).as_py()))
        stages = latency.record(cur, key, name, table)
    return FileResult(key, name, table.num_rows, totals.appended, totals.latency_ms, stages)


@dataclass(frozen=True)
class Separated:
    """What :func:`apply_separating` made of a file: its rows, and the rows the warehouse rejected
    one by one as a Parquet file of the same schema (None when it rejected none on its own)."""

    rows: int
    rejected_rows: int
    rejected: bytes | None
    reason: str


def apply_separating(conn: Any, key: str, data: bytes) -> Separated:
    """Apply every row of a file refused with RejectedValuesError that the warehouse accepts, and
    return the rows it rejects, with the first rejection's reason.

    The rows are tried in halves, each in its own transaction, down to single rows, so one bad value
    holds back its own row, not the file. A file's
    rows are events like any file's: applying some now and the others later, fixed, gives what
    in-order application gives. Not for a snapshot read's file: its completion marker counts the
    file applied once any part of it is (the caller dead-letters such a file whole).
    """
    name = table_of(key)
    table = read_parquet(key, data)
    rejected: list[pa.Table] = []
    reasons: list[str] = []

    def separate(rows: pa.Table) -> None:
        try:
            _apply_rows(conn, key, name, rows)
        except RejectedValuesError as exc:
            if rows.num_rows == 1:
                rejected.append(rows)
                reasons.append(exc.reason)
                return
            separate(rows.slice(0, rows.num_rows // 2))
            separate(rows.slice(rows.num_rows // 2))

    half = table.num_rows // 2
    for part in (table.slice(0, half), table.slice(half)) if half else (table,):
        separate(part)
    if not rejected:
        return Separated(table.num_rows, 0, None, "")
    bad = pa.concat_tables(rejected)
    out = io.BytesIO()
    pq.write_table(bad, out)
    log.warning("%s: %s of %s rows rejected, the others applied", key, bad.num_rows, table.num_rows)
    return Separated(table.num_rows, bad.num_rows, out.getvalue(),
                     f"{bad.num_rows} of {table.num_rows} rows rejected, the others applied; "
                     f"the first: {reasons[0]}")


def apply_marker(conn: Any, key: str, name: str, marker: SnapshotMarker,
                 fetch: Callable[[str], bytes] | None) -> FileResult:
    """Complete a table's snapshot read: apply each listed file not applied yet (each in its own
    transaction, as if delivered), then tombstone the ghost rows (see _sweep, ghosts_sql)."""
    if (marker.schema, marker.table) != (SOURCE_SCHEMA, name):
        raise BadFileError(key, f"the marker of {marker.schema}.{marker.table} is filed under "
                                f"{SOURCE_SCHEMA}.{name}")
    with _transaction(conn, key) as cur:
        cur.execute(sql.SQL("SELECT f FROM unnest(%s::text[]) f "
                            "WHERE NOT EXISTS (SELECT 1 FROM {} WHERE file_key = f)").format(
                                SNAPSHOT_FILES), (list(marker.files),))
        missing = [row[0] for row in cur.fetchall()]
    for listed in missing:
        if fetch is None:
            raise RetryableLoadError(f"{key}: {len(missing)} listed files not applied yet")
        try:
            apply_file(conn, listed, fetch(listed))
        except BadFileError as exc:
            raise BadFileError(key, f"listed file {listed} cannot be applied: {exc.reason}") from None
    with _transaction(conn, key) as cur:
        ghosts, totals = _sweep(cur, _spec(cur, key, name), marker)
    log.info("snapshot read of %s.%s at lsn %s complete (%s files, %s rows, %s applied by the "
             "marker): %s ghost rows tombstoned", SOURCE_SCHEMA, name, marker.lsn,
             len(marker.files), marker.rows, len(missing), ghosts)
    return FileResult(key, name, 0, totals.appended, totals.latency_ms)

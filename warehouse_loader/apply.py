"""Applying one processed Parquet file to the warehouse, in one transaction, set-based.

The result does not depend on the order files arrive in, nor on which files are applied at the
same time: every version of every row is kept in ``mirror_history.<table>``, and what the warehouse
shows is derived from those versions in source-position order ``(lsn, seq)``, for the rows the
file concerns. A handful of statements per file, whatever its size:

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
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg2 import sql

from totes_cdc.contract import (
    META_COLUMNS,
    OP_DELETE,
    OP_INSERT,
    OP_SNAPSHOT,
    OP_TRUNCATE,
    OP_UPDATE,
    OPS,
    TOMBSTONE_SEQ_FACTOR,
    arrow_type,
)
from totes_cdc.errors import first_line
from warehouse_loader import latency
from warehouse_loader.derivation import (
    DATE_COLUMNS,
    DEPENDENCIES,
    DIMENSIONS_BY_TABLE,
    FACTS_BY_SOURCE,
    MIRROR_SCHEMA,
    SOURCE_SCHEMA,
    Fact,
    currency_name,
    date_rows,
    iso_currency_parameters,
)
from warehouse_loader.errors import BadFileError, RetryableLoadError

log = logging.getLogger(__name__)

HISTORY_SCHEMA = "mirror_history"
# Every truncate applied, per source table (migration 003).
TRUNCATIONS = sql.Identifier(MIRROR_SCHEMA, "_truncations")
POSITION_COLUMNS = ("source_lsn", "source_seq", "is_deleted")
# pg_advisory_xact_lock key serialising dimension recomputes (an arbitrary project constant).
DIMENSION_LOCK_KEY = 0x746F7465735F6469
# pg_advisory_xact_lock(TABLE_LOCK_CLASS, hashtext(table)) per source table: see _lock_table().
TABLE_LOCK_CLASS = 0x746F7465
# Versions added by one file from which its table's history statistics are refreshed at once.
HISTORY_ANALYZE_ROWS = 10_000
_STAGED_META = ("_op", "_lsn", "_seq", "_commit_ts", "_unchanged")
_STAGED_META_TYPES = ("text", "bigint", "bigint", "timestamptz", "text")


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
    cur.execute("SELECT to_regnamespace(%s) IS NOT NULL", (MIRROR_SCHEMA,))
    if not cur.fetchone()[0]:
        raise RetryableLoadError("the warehouse is not migrated (no schema mirror): run "
                                 "`totes-cdc warehouse migrate`")
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
        "COALESCE(a.attnum = ANY(i.indkey), false) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'r' "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (MIRROR_SCHEMA, name))
    rows = [r for r in cur.fetchall() if r[0] not in POSITION_COLUMNS]
    if not rows:
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


def stage_csv(table: pa.Table, spec: SourceTable) -> bytes:
    """The staged columns as CSV for COPY; ``_unchanged`` as a comma-separated list of names."""
    unchanged = pc.binary_join(table["_unchanged"], ",")
    staged = pa.table([table["_op"], table["_lsn"], table["_seq"], table["_commit_ts"], unchanged,
                       *(table[name] for name in spec.names)],
                      names=[*_STAGED_META, *spec.names])
    buf = io.BytesIO()
    pa_csv.write_csv(staged, buf, pa_csv.WriteOptions(include_header=False))
    return buf.getvalue()


def _ids(names: tuple[str, ...], prefix: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(*((prefix, n) if prefix else (n,))) for n in names)


def _eq(left: str, right: str, names: tuple[str, ...]) -> sql.Composed:
    """``left.a = right.a AND ...`` over ``names``."""
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(left, n),
                                                           sql.Identifier(right, n)) for n in names)


def create_temp_sql(spec: SourceTable) -> list[sql.Composed]:
    """``stage`` (the file's rows) and ``touched`` (the versions this file adds, changes or removes;
    a version may be listed twice, every reader takes it as a set)."""
    keys = [(name, typ) for name, typ in spec.columns if name in spec.key]
    return [sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        sql.Identifier(name), sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns))
        for name, columns in (
            ("stage", [*zip(_STAGED_META, _STAGED_META_TYPES, strict=True), *spec.columns]),
            ("touched", [*keys, ("source_lsn", "bigint"), ("source_seq", "bigint")]))]


def lock_keys_sql(spec: SourceTable) -> sql.Composed:
    """Lock the file's rows in the mirror (inserting the ones it has never seen) in key order.

    Whatever one file does to a row (its versions, their values, the facts, the mirror row) it
    does holding this lock, so a file applied concurrently with another of the same row sees all
    that file's versions: the versions of a row are resolved one file at a time. ON CONFLICT DO
    UPDATE locks the rows it finds even where its WHERE is false; a row inserted here gets its
    final values from ``mirror_sync_sql``.
    """
    return sql.SQL(
        "INSERT INTO {mirror} AS m ({cols}, source_lsn, source_seq, is_deleted) "
        "SELECT DISTINCT ON ({keys}) {cols}, _lsn, _seq, _op = {delete} FROM stage "
        "ORDER BY {keys}, _lsn DESC, _seq DESC "
        "ON CONFLICT ({keys}) DO UPDATE SET source_lsn = m.source_lsn WHERE false").format(
            mirror=sql.Identifier(MIRROR_SCHEMA, spec.name), cols=_ids(spec.names),
            keys=_ids(spec.key), delete=sql.Literal(OP_DELETE))


def history_insert_sql(spec: SourceTable) -> sql.Composed:
    """Add the file's versions to the row history (a replay adds nothing), and to ``touched``."""
    return sql.SQL(
        "WITH added AS (INSERT INTO {history} ({cols}, source_lsn, source_seq, source_op, "
        "  source_commit_ts, unchanged) "
        "  SELECT {cols}, _lsn, _seq, _op, _commit_ts, CASE WHEN _op = {delete} THEN NULL "
        "    ELSE string_to_array(COALESCE(_unchanged, ''), ',') END FROM stage "
        "  ON CONFLICT DO NOTHING RETURNING {keys}, source_lsn, source_seq) "
        "INSERT INTO touched SELECT * FROM added").format(
            history=sql.Identifier(HISTORY_SCHEMA, spec.name), cols=_ids(spec.names),
            keys=_ids(spec.key), delete=sql.Literal(OP_DELETE))


# The operations of a version that holds a live row.
_LIVE = sql.SQL(", ").join(sql.Literal(op) for op in (OP_SNAPSHOT, OP_INSERT, OP_UPDATE))


def tombstones_sql(spec: SourceTable, keys: sql.Composable) -> sql.Composed:
    """Make the truncate tombstones of the rows ``keys`` selects what in-order application gives.

    A truncate tombstones a row when the row's latest change before the truncate is a live version
    (not a delete, not an earlier truncate). Versions and truncates arrive in any order, so the
    tombstones are recomputed from both: missing ones are added (their values resolved later) and
    ones a late delete or truncate makes wrong are removed, with their facts. Both go to ``touched``.
    """
    fact = FACTS_BY_SOURCE.get(spec.name)
    history = sql.Identifier(HISTORY_SCHEMA, spec.name)
    drop_facts = sql.SQL("")
    if fact:
        drop_facts = sql.SQL(
            ", dropped AS (DELETE FROM {fact} f USING removed r WHERE f.{key} = r.{key} "
            "AND f.source_lsn = r.source_lsn AND f.source_seq = -(r.source_seq * {factor} + r.{key})) "
            ).format(
                fact=sql.Identifier(fact.table), factor=sql.Literal(TOMBSTONE_SEQ_FACTOR),
                key=sql.Identifier(fact.key))
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
            keys=keys, key=_ids(spec.key), hkeys=_ids(spec.key, "h"), kkeys=_ids(spec.key, "k"),
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
        "source_seq = EXCLUDED.source_seq, is_deleted = EXCLUDED.is_deleted "
        "WHERE ({current}) IS DISTINCT FROM ({new})").format(
            mirror=sql.Identifier(MIRROR_SCHEMA, spec.name), cols=_ids(spec.names),
            keys=_ids(spec.key), history=sql.Identifier(HISTORY_SCHEMA, spec.name),
            deleted=sql.SQL(", ").join(sql.Literal(op) for op in (OP_DELETE, OP_TRUNCATE)),
            sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                    for c in spec.others),
            current=_ids((*spec.others, *POSITION_COLUMNS), "m"),
            new=_ids((*spec.others, *POSITION_COLUMNS), "excluded"))


_FACT_META = ("source_op", "source_lsn", "source_seq", "source_commit_ts", "is_deleted")


def fact_sync_sql(fact: Fact) -> sql.Composed:
    """Make the facts of the touched rows what in-order application gives; extend dim_date.

    Every version of a touched row that is touched or follows a touched position (its predecessor
    may have changed) is compared with the facts: appended when missing, its values corrected when
    they differ (a delete or tombstone that got its values from a late earlier version), removed
    when it is a snapshot read that must not be there. A truncate's tombstone is a deletion; since
    one truncate has one position, its fact carries ``source_seq = -(truncate seq * 2^31 + row id)``
    (see fact_version_seq() in the schema).

    A snapshot read identical to the version just before it, itself a snapshot read, is not a
    fact: a capture killed between putting a snapshot chunk and saving its progress reads that
    chunk again (at a new snapshot position) when it resumes, and the warehouse must not double it.
    A re-read that differs, or follows any other change (a delete and a re-insert in between), is
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
        "versions AS MATERIALIZED (SELECT {cols}, _op = {r} AND _prev_op = {r} "
        "  AND ({names}) IS NOT DISTINCT FROM _prev AS _repeat FROM ordered o "
        "  WHERE o.source_commit_ts IS NOT NULL AND EXISTS (SELECT 1 FROM touched t "
        "    WHERE t.{key} = o.{key} "
        "    AND (t.source_lsn, t.source_seq) <= (o.source_lsn, o._seq) AND (o._prev_lsn IS NULL "
        "    OR (t.source_lsn, t.source_seq) >= (o._prev_lsn, o._prev_seq)))), "
        "appended AS (INSERT INTO {fact} ({cols}) SELECT {cols} FROM versions WHERE NOT _repeat "
        "  ON CONFLICT ({key}, source_lsn, source_seq) DO NOTHING "
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
            names=_ids(fact.names), key=key, r=sql.Literal(OP_SNAPSHOT),
            fact=sql.Identifier(fact.table),
            sets=sql.SQL(", ").join(sql.SQL("{c} = v.{c}").format(c=sql.Identifier(c))
                                    for c in fact.names),
            fnames=_ids(fact.names, "f"), vnames=_ids(fact.names, "v"),
            date_cols=_ids(DATE_COLUMNS),
            dates=date_rows(fact.referenced_dates(sql.Identifier("versions"))))


def dimension_upserts_sql(source: str, versions: str) -> list[sql.Composed]:
    """One upsert per dimension that changes of ``source`` rows (keys in ``versions``) touch.

    A source row only ever deleted (its values unknown) gets no dimension row.
    """
    statements = []
    for dep in DEPENDENCIES:
        if dep.source != source:
            continue
        dim = DIMENSIONS_BY_TABLE[dep.dimension]
        statements.append(sql.SQL(
            "INSERT INTO {dim} AS t ({cols}) SELECT * FROM ({derive}) AS d ({cols}) "
            "WHERE d.{key} IN ({keys}) AND EXISTS (SELECT 1 FROM {history} h "
            "  WHERE h.{source_key} = d.{key} AND h.source_op IN ({live})) "
            "ON CONFLICT ({key}) DO UPDATE SET {sets} "
            "WHERE ({current}) IS DISTINCT FROM ({new})").format(
                dim=sql.Identifier(dim.table), cols=_ids(dim.all_columns),
                derive=dim.derive(MIRROR_SCHEMA), key=sql.Identifier(dim.key),
                history=sql.Identifier(HISTORY_SCHEMA, dim.source),
                source_key=sql.Identifier(dim.source_key), live=_LIVE,
                keys=dep.affected(MIRROR_SCHEMA, sql.Identifier(versions)),
                sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                        for c in dim.columns),
                current=_ids(dim.columns, "t"), new=_ids(dim.columns, "excluded")))
    return statements


class _Totals:
    def __init__(self) -> None:
        self.appended = 0
        self.latency_ms: float | None = None

    def add(self, row: tuple[int, Any]) -> None:
        self.appended += row[0]
        if row[1] is not None:
            self.latency_ms = max(self.latency_ms or 0.0, float(row[1]))


def _lock_table(cur: Any, name: str, exclusive: bool) -> None:
    """Serialise a file holding a truncate against every other file of its table.

    A truncate tombstones the rows the warehouse holds, and a file of rows applies the truncates
    recorded before it: at READ COMMITTED neither would see the other's uncommitted work, so a row
    older than a truncate applied concurrently would stay current. Files of rows take the lock
    shared (they run concurrently with each other), a file with a truncate exclusive: whichever
    commits second sees the other's rows or truncate.
    """
    lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    cur.execute(sql.SQL("SELECT {}(%s, hashtext(%s))").format(sql.Identifier(lock)),
                (TABLE_LOCK_CLASS, name))


def _apply(cur: Any, spec: SourceTable, table: pa.Table) -> _Totals:
    """Apply the file's versions and truncates: see the module docstring."""
    is_truncate = pc.equal(table["_op"], OP_TRUNCATE)
    truncates = pc.filter(table, is_truncate)
    rows = pc.filter(table, pc.invert(is_truncate))
    _lock_table(cur, spec.name, exclusive=truncates.num_rows > 0)
    for statement in create_temp_sql(spec):
        cur.execute(statement)
    if rows.num_rows:
        cur.copy_expert("COPY stage FROM STDIN WITH (FORMAT csv)", io.BytesIO(stage_csv(rows, spec)))
        cur.execute(lock_keys_sql(spec))
        cur.execute(history_insert_sql(spec))
        if cur.rowcount >= HISTORY_ANALYZE_ROWS:
            # A bulk load (a snapshot) leaves the history without statistics until autovacuum
            # comes round; small files planned meanwhile would hash the whole table.
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(HISTORY_SCHEMA, spec.name)))
    for lsn, seq, commit_ts in zip(*(truncates[c].to_pylist() for c in ("_lsn", "_seq", "_commit_ts")),
                                   strict=True):
        cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
            TRUNCATIONS), (spec.name, lsn, seq, commit_ts))
        log.warning("truncate of %s.%s at lsn %s applied: its rows are marked deleted",
                    SOURCE_SCHEMA, spec.name, lsn)
    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE source_table = %s)").format(TRUNCATIONS),
                (spec.name,))
    if cur.fetchone()[0]:
        # A truncate concerns every row of the table; a file of rows, its own rows.
        keys = sql.SQL("SELECT {} FROM {}").format(
            _ids(spec.key), sql.Identifier(MIRROR_SCHEMA, spec.name) if truncates.num_rows
            else sql.SQL("stage GROUP BY {}").format(_ids(spec.key)))
        cur.execute(tombstones_sql(spec, keys))
    # Statistics let the planner choose index lookups into the history, mirror and facts for a
    # small batch (a temporary table has none, and is assumed large).
    cur.execute("ANALYZE touched")
    # Most files carry all their values and no version after them lacks any: the check is far
    # cheaper to plan than the resolution.
    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 {})").format(dependent_sql(spec)))
    if cur.fetchone()[0]:
        cur.execute(resolve_sql(spec))
    totals = _Totals()
    if fact := FACTS_BY_SOURCE.get(spec.name):
        cur.execute(fact_sync_sql(fact))
        totals.add(cur.fetchone())
    cur.execute(mirror_sync_sql(spec))
    statements = dimension_upserts_sql(spec.name, "touched")
    if statements:
        # Files applied concurrently (several Lambda instances) may touch the same dimension rows
        # from different source tables (an address and a counterparty): recomputing one at a time,
        # each statement sees the other's committed mirror rows, so the last write is complete.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (DIMENSION_LOCK_KEY,))
    for statement in statements:
        cur.execute(statement, iso_currency_parameters())
    return totals


def warn_unknown_currencies(key: str, table: pa.Table) -> None:
    for code in pc.unique(pc.drop_null(table["currency_code"])).to_pylist():
        if currency_name(code) is None:
            log.warning("currency code %r in %s is not in ISO 4217: dim_currency names it %r",
                        code, key, f"Unknown currency ({code})")


def apply_file(conn: Any, key: str, data: bytes) -> FileResult:
    """Apply the processed file ``key`` (its bytes ``data``) in one transaction.

    BadFileError when the file breaks the contract (or the warehouse rejects its values);
    RetryableLoadError for anything a retry may fix. Applying a file twice changes nothing.
    """
    name = table_of(key)
    table = read_parquet(key, data)
    try:
        with conn, conn.cursor() as cur:
            spec = source_table(cur, name)
            if spec is None:
                raise BadFileError(key, f"unknown table {SOURCE_SCHEMA}.{name}: the warehouse "
                                        "does not mirror it")
            validate(key, table, spec)
            if "currency_code" in table.column_names:
                warn_unknown_currencies(key, table)
            totals = _apply(cur, spec, table)
            stages = latency.record(cur, key, name, table)
    except psycopg2.DataError as exc:
        raise BadFileError(key, f"the warehouse rejected its values: {first_line(exc)}") from None
    except psycopg2.Error as exc:
        raise RetryableLoadError(f"applying {key} failed: {first_line(exc)}") from exc
    return FileResult(key, name, table.num_rows, totals.appended, totals.latency_ms, stages)

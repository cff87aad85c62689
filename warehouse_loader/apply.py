"""Applying one processed Parquet file to the warehouse, in one transaction, set-based.

The file's rows are COPYed into a temporary table, then one statement per target:

1. ``resolved``: every version gets its full values. A delete carries only its key and a
   TOAST-unchanged column carries null, so those values are taken from the previous version of the
   row: an earlier row of the same file, else the mirror. (Files with neither skip this step.)
2. the mirror: the newest version per key, applied only over an older source position (replays
   and reordering cannot move it back); a delete keeps the last known values, marked deleted.
3. the facts (order/payment files): one row per version, ``ON CONFLICT (source_lsn, source_seq)
   DO NOTHING``, and ``dim_date`` extended to every date those rows reference (one statement).
4. the dimensions: exactly the rows the file touches, dependants included, recomputed from the
   mirror and written only when they differ.

A truncate splits the file: the rows before it, the truncate, the rows after it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg2 import sql

from totes_cdc.contract import META_COLUMNS, OP_DELETE, OP_SNAPSHOT, OP_TRUNCATE, OPS, arrow_type
from totes_cdc.settings import settings
from warehouse_loader.derivation import (
    DATE_COLUMNS,
    DEPENDENCIES,
    DIMENSIONS_BY_TABLE,
    FACTS_BY_SOURCE,
    Fact,
    currency_name,
    date_rows,
    iso_currency_parameters,
)
from warehouse_loader.errors import BadFileError, RetryableLoadError

log = logging.getLogger(__name__)

SOURCE_SCHEMA = "public"
MIRROR_SCHEMA = "mirror"
POSITION_COLUMNS = ("source_lsn", "source_seq", "is_deleted")
# Truncate tombstones get source_seq = -(truncate seq * 2^31 + row id): see fact_version_seq().
TOMBSTONE_SEQ_FACTOR = 2**31
# pg_advisory_xact_lock key serialising dimension recomputes (an arbitrary project constant).
DIMENSION_LOCK_KEY = 0x746F7465735F6469
# pg_advisory_xact_lock(TABLE_LOCK_CLASS, hashtext(table)) per source table: see _lock_table().
TABLE_LOCK_CLASS = 0x746F7465
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


@dataclass(frozen=True)
class FileResult:
    key: str
    table: str
    rows: int
    fact_rows_appended: int
    latency_ms: float | None  # max(loaded_at - source commit ts) over appended fact rows


def table_of(key: str) -> str:
    """The source table of a processed object key ``<prefix><schema>.<table>/...``."""
    prefix = settings()["prefixes"]["processed"]
    first = key.removeprefix(prefix).split("/", 1)[0] if key.startswith(prefix) else ""
    schema, _, table = first.partition(".")
    if schema != SOURCE_SCHEMA or not table:
        raise BadFileError(key, f"not a processed file of a {SOURCE_SCHEMA} table "
                                f"(expected {prefix}{SOURCE_SCHEMA}.<table>/...)")
    return table


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


def create_stage_sql(spec: SourceTable) -> sql.Composed:
    columns = [*zip(_STAGED_META, _STAGED_META_TYPES, strict=True), *spec.columns]
    return sql.SQL("CREATE TEMP TABLE stage ({}) ON COMMIT DROP").format(
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns))


def resolve_sql(spec: SourceTable) -> sql.Composed:
    """``resolved``: each staged version with its full values (see the module docstring).

    For each non-key column, ``_g<n>`` counts the versions of the row so far that carry the column;
    the value is the first of its group (the carrying version), or the mirror's when none has.
    """
    keys = _ids(spec.key)
    groups, values = [], []
    for n, column in enumerate(spec.others):
        group = sql.Identifier(f"_g{n}")
        groups.append(sql.SQL(
            "count(*) FILTER (WHERE _op <> {delete} AND NOT {name} = ANY(_unchanged_columns)) "
            "OVER (PARTITION BY {keys} ORDER BY _lsn, _seq) AS {group}").format(
                delete=sql.Literal(OP_DELETE), name=sql.Literal(column), keys=keys, group=group))
        values.append(sql.SQL(
            "CASE WHEN a.{group} = 0 THEN m.{col} ELSE first_value(a.{col}) OVER "
            "(PARTITION BY {akeys}, a.{group} ORDER BY a._lsn, a._seq) END AS {col}").format(
                group=group, col=sql.Identifier(column), akeys=_ids(spec.key, "a")))
    return sql.SQL(
        "CREATE TEMP TABLE resolved ON COMMIT DROP AS "
        "SELECT a._op, a._lsn, a._seq, a._commit_ts, {akeys}{values} FROM ("
        "  SELECT s.*{groups} FROM ("
        "    SELECT *, string_to_array(COALESCE(_unchanged, ''), ',') AS _unchanged_columns "
        "    FROM stage) s) a "
        "LEFT JOIN {mirror} m ON {join}").format(
            akeys=_ids(spec.key, "a"),
            values=sql.SQL("").join(sql.SQL(", ") + v for v in values),
            groups=sql.SQL("").join(sql.SQL(", ") + g for g in groups),
            mirror=sql.Identifier(MIRROR_SCHEMA, spec.name),
            join=sql.SQL(" AND ").join(sql.SQL("m.{k} = a.{k}").format(k=sql.Identifier(k))
                                       for k in spec.key))


def mirror_upsert_sql(spec: SourceTable, versions: str) -> sql.Composed:
    """Upsert the newest version per key in ``versions``, only over an older source position."""
    return sql.SQL(
        "INSERT INTO {mirror} AS m ({cols}, source_lsn, source_seq, is_deleted) "
        "SELECT DISTINCT ON ({keys}) {cols}, _lsn, _seq, _op = {delete} FROM {versions} "
        "ORDER BY {keys}, _lsn DESC, _seq DESC "
        "ON CONFLICT ({keys}) DO UPDATE SET {sets}, source_lsn = EXCLUDED.source_lsn, "
        "source_seq = EXCLUDED.source_seq, is_deleted = EXCLUDED.is_deleted "
        "WHERE (m.source_lsn, m.source_seq) < (EXCLUDED.source_lsn, EXCLUDED.source_seq)").format(
            mirror=sql.Identifier(MIRROR_SCHEMA, spec.name), cols=_ids(spec.names),
            keys=_ids(spec.key), delete=sql.Literal(OP_DELETE), versions=sql.Identifier(versions),
            sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                    for c in spec.others))


_FACT_META = ("source_op", "source_lsn", "source_seq", "source_commit_ts", "is_deleted")


def fact_versions(fact: Fact, versions: str) -> sql.Composed:
    """The rows of ``versions`` converted to the fact table's columns, then _FACT_META."""
    extra = tuple(sql.SQL(e) for e in ("_op", "_lsn", "_seq", "_commit_ts", "_op = 'd'"))
    return fact.convert(sql.Identifier(versions), extra)


def fact_append_sql(fact: Fact, versions: sql.Composable) -> sql.Composed:
    """Append ``versions`` (fact columns then _FACT_META) and extend dim_date to their dates.

    A snapshot read identical to an earlier snapshot read of the same row is not appended: a
    capture killed between putting a snapshot chunk and saving its progress reads that chunk
    again (at a new snapshot position) when it resumes, and the warehouse must not double it.
    A re-read that differs (the row changed in between) is a real new version and is appended.

    Returns one row: (fact rows appended, max latency ms over them).
    """
    return sql.SQL(
        "WITH versions ({cols}) AS MATERIALIZED ({versions}), "
        "appended AS (INSERT INTO {fact} ({cols}) SELECT * FROM versions v "
        "  WHERE v.source_op <> {snapshot} OR NOT EXISTS (SELECT 1 FROM {fact} f "
        "    WHERE f.{key} = v.{key} AND f.source_op = {snapshot} AND NOT f.is_deleted "
        "    AND ({fcols}) IS NOT DISTINCT FROM ({vcols})) "
        "  ON CONFLICT (source_lsn, source_seq) DO NOTHING RETURNING loaded_at, source_commit_ts), "
        "dates AS (INSERT INTO dim_date ({date_cols}) {dates} ON CONFLICT (date_id) DO NOTHING) "
        "SELECT count(*), max(extract(epoch FROM loaded_at - source_commit_ts) * 1000) "
        "FROM appended").format(
            versions=versions, fact=sql.Identifier(fact.table), key=sql.Identifier(fact.key),
            snapshot=sql.Literal(OP_SNAPSHOT), fcols=_ids(fact.names, "f"), vcols=_ids(fact.names, "v"),
            cols=_ids((*fact.names, *_FACT_META)), date_cols=_ids(DATE_COLUMNS),
            dates=date_rows(fact.referenced_dates(sql.Identifier("versions"))))


def dimension_upserts_sql(source: str, versions: str) -> list[sql.Composed]:
    """One upsert per dimension that changes of ``source`` rows (keys in ``versions``) touch."""
    statements = []
    for dep in DEPENDENCIES:
        if dep.source != source:
            continue
        dim = DIMENSIONS_BY_TABLE[dep.dimension]
        statements.append(sql.SQL(
            "INSERT INTO {dim} AS t ({cols}) SELECT * FROM ({derive}) AS d ({cols}) "
            "WHERE d.{key} IN ({keys}) "
            "ON CONFLICT ({key}) DO UPDATE SET {sets} "
            "WHERE ({current}) IS DISTINCT FROM ({new})").format(
                dim=sql.Identifier(dim.table), cols=_ids(dim.all_columns),
                derive=dim.derive(MIRROR_SCHEMA), key=sql.Identifier(dim.key),
                keys=sql.SQL(dep.keys).format(changed=sql.Identifier(versions)),
                sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                        for c in dim.columns),
                current=_ids(dim.columns, "t"), new=_ids(dim.columns, "excluded")))
    return statements


def truncate_tombstones_sql(fact: Fact) -> sql.Composed:
    """A deleted version of every current row of the fact's mirror older than the truncate."""
    extra = (sql.SQL("'d'"), sql.Placeholder("lsn"),
             sql.SQL("-({} * {} + {})").format(sql.Placeholder("seq"),
                                                sql.Literal(TOMBSTONE_SEQ_FACTOR),
                                                sql.Identifier(fact.key)),
             sql.Placeholder("commit_ts"), sql.SQL("true"))
    current = sql.SQL("{} WHERE NOT is_deleted AND (source_lsn, source_seq) < ({}, {})").format(
        sql.Identifier(MIRROR_SCHEMA, fact.source), sql.Placeholder("lsn"), sql.Placeholder("seq"))
    return fact_append_sql(fact, fact.convert(current, extra))


def truncate_mirror_sql(spec: SourceTable) -> sql.Composed:
    return sql.SQL(
        "UPDATE {} SET is_deleted = true, source_lsn = %(lsn)s, source_seq = %(seq)s "
        "WHERE (source_lsn, source_seq) < (%(lsn)s, %(seq)s)").format(
            sql.Identifier(MIRROR_SCHEMA, spec.name))


def _segments(table: pa.Table) -> list[pa.Table]:
    """The file in source order, split around each truncate (a truncate is its own segment)."""
    table = table.sort_by([("_lsn", "ascending"), ("_seq", "ascending")])
    cuts = pc.indices_nonzero(pc.equal(table["_op"], OP_TRUNCATE)).to_pylist()
    segments, start = [], 0
    for cut in cuts:
        segments += [table.slice(start, cut - start), table.slice(cut, 1)]
        start = cut + 1
    segments.append(table.slice(start))
    return [s for s in segments if s.num_rows]


class _Totals:
    def __init__(self) -> None:
        self.appended = 0
        self.latency_ms: float | None = None

    def add(self, row: tuple[int, Any]) -> None:
        self.appended += row[0]
        if row[1] is not None:
            self.latency_ms = max(self.latency_ms or 0.0, float(row[1]))


def _apply_rows(cur: Any, spec: SourceTable, rows: pa.Table, totals: _Totals) -> None:
    cur.execute("DELETE FROM stage")  # rows of an earlier segment; cheaper than TRUNCATE here
    cur.copy_expert("COPY stage FROM STDIN WITH (FORMAT csv)", io.BytesIO(stage_csv(rows, spec)))
    # Statistics let the planner choose index lookups into the mirror for a small batch.
    cur.execute("ANALYZE stage")
    # Versions that carry all their values (no delete, no TOAST-unchanged column) need no resolving.
    gaps = pc.any(pc.or_(pc.equal(rows["_op"], OP_DELETE),
                         pc.greater(pc.list_value_length(rows["_unchanged"]), 0))).as_py()
    versions = "resolved" if gaps else "stage"
    if gaps:
        cur.execute(resolve_sql(spec))
    cur.execute(mirror_upsert_sql(spec, versions))
    if fact := FACTS_BY_SOURCE.get(spec.name):
        cur.execute(fact_append_sql(fact, fact_versions(fact, versions)))
        totals.add(cur.fetchone())
    statements = dimension_upserts_sql(spec.name, versions)
    if statements:
        # Files applied concurrently (several Lambda instances) may touch the same dimension rows
        # from different source tables (an address and a counterparty): recomputing one at a time,
        # each statement sees the other's committed mirror rows, so the last write is complete.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (DIMENSION_LOCK_KEY,))
    for statement in statements:
        cur.execute(statement, iso_currency_parameters())
    if gaps:
        cur.execute("DROP TABLE resolved")


def _truncate(cur: Any, spec: SourceTable, params: dict[str, Any], totals: _Totals) -> None:
    """Tombstone and mark deleted every mirror row of ``spec`` older than the truncate."""
    if fact := FACTS_BY_SOURCE.get(spec.name):
        cur.execute(truncate_tombstones_sql(fact), params)
        totals.add(cur.fetchone())
    cur.execute(truncate_mirror_sql(spec), params)


def _apply_truncate(cur: Any, spec: SourceTable, row: pa.Table, totals: _Totals) -> None:
    params = {"lsn": row["_lsn"][0].as_py(), "seq": row["_seq"][0].as_py(),
              "commit_ts": row["_commit_ts"][0].as_py()}
    cur.execute("INSERT INTO mirror._truncations VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (spec.name, params["lsn"], params["seq"], params["commit_ts"]))
    _truncate(cur, spec, params, totals)
    log.warning("truncate of %s.%s applied at lsn %s: its mirror rows are marked deleted",
                SOURCE_SCHEMA, spec.name, params["lsn"])


def _reapply_later_truncates(cur: Any, spec: SourceTable, rows: pa.Table, totals: _Totals) -> None:
    """Rows older than a truncate already applied (from another shard, late) are truncated too."""
    cur.execute("SELECT source_lsn, source_seq, source_commit_ts FROM mirror._truncations "
                "WHERE source_table = %s AND (source_lsn, source_seq) > (%s, %s) "
                "ORDER BY source_lsn, source_seq",
                (spec.name, rows["_lsn"][0].as_py(), rows["_seq"][0].as_py()))
    for lsn, seq, commit_ts in cur.fetchall():
        _truncate(cur, spec, {"lsn": lsn, "seq": seq, "commit_ts": commit_ts}, totals)


def _lock_table(cur: Any, name: str, table: pa.Table) -> None:
    """Serialise a file holding a truncate against every other file of its table.

    A truncate tombstones the rows the mirror holds, and a file of rows re-applies the truncates
    recorded before it: at READ COMMITTED neither sees the other's uncommitted work, so a row older
    than a truncate applied concurrently would stay current. Files of rows take the lock shared
    (they run concurrently with each other), a file with a truncate exclusive: whichever commits
    second sees the other's rows or truncate.
    """
    exclusive = pc.any(pc.equal(table["_op"], OP_TRUNCATE)).as_py()
    lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    cur.execute(sql.SQL("SELECT {}(%s, hashtext(%s))").format(sql.Identifier(lock)),
                (TABLE_LOCK_CLASS, name))


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
            _lock_table(cur, name, table)
            if "currency_code" in table.column_names:
                warn_unknown_currencies(key, table)
            totals = _Totals()
            cur.execute(create_stage_sql(spec))
            for segment in _segments(table):
                if segment["_op"][0].as_py() == OP_TRUNCATE:
                    _apply_truncate(cur, spec, segment, totals)
                else:
                    _apply_rows(cur, spec, segment, totals)
                    _reapply_later_truncates(cur, spec, segment, totals)
    except psycopg2.DataError as exc:
        raise BadFileError(key, f"the warehouse rejected its values: {_first_line(exc)}") from None
    except psycopg2.Error as exc:
        raise RetryableLoadError(f"applying {key} failed: {_first_line(exc)}") from exc
    return FileResult(key, name, table.num_rows, totals.appended, totals.latency_ms)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

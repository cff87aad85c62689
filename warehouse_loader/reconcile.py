"""The correctness check of docs/warehouse.md, against a live source and warehouse.

- each dimension equals its derivation (:mod:`warehouse_loader.derivation`) applied to the
  source's current rows; a dimension row whose source row was deleted may stay (the mirror says
  so), and dim_date must hold every date the source's current order/payment rows reference;
- each fact table's current-state view equals the source table's current rows, converted;
- no two fact rows share a source position.

Both sides are read whole and compared by key in Python: the real dataset is ~50k rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg2 import sql

from totes_cdc.db import connect
from warehouse_loader.derivation import (
    DATE_COLUMNS,
    DIMENSIONS,
    FACTS,
    date_rows,
    iso_currency_parameters,
)

SAMPLE_KEYS = 5


@dataclass
class TableReport:
    """One table's comparison: ``compared`` source-side rows, and the first differing keys."""

    table: str
    compared: int = 0
    missing: int = 0        # in the source, not in the warehouse
    extra: int = 0          # in the warehouse, not in the source (and not allowed to stay)
    different: int = 0      # in both, with different values
    duplicate_positions: int = 0
    sample_missing: list[Any] = field(default_factory=list)
    sample_extra: list[Any] = field(default_factory=list)
    sample_different: list[Any] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.different + self.duplicate_positions


@dataclass
class Report:
    tables: list[TableReport]

    @property
    def ok(self) -> bool:
        return all(t.differences == 0 for t in self.tables)


def compare(table: str, expected: Iterable[Sequence[Any]], actual: Iterable[Sequence[Any]],
            may_stay: frozenset[Any] | None = frozenset()) -> TableReport:
    """Compare rows keyed by their first value. Extra keys in ``may_stay`` (all, if None) are fine."""
    want = {row[0]: tuple(row) for row in expected}
    have = {row[0]: tuple(row) for row in actual}
    report = TableReport(table, compared=len(want))
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


def _source_facts(fact_index: int) -> sql.Composed:
    fact = FACTS[fact_index]
    return fact.convert(sql.Identifier("public", fact.source))


def reconcile(source_dsn: str, warehouse_dsn: str) -> Report:
    source = connect(source_dsn, "source")
    warehouse = connect(warehouse_dsn, "warehouse")
    try:
        with source.cursor() as src, warehouse.cursor() as wh:
            tables = []
            iso = iso_currency_parameters()
            for dim in DIMENSIONS:
                deleted = _rows(wh, sql.SQL("SELECT {} FROM {} WHERE is_deleted").format(
                    sql.Identifier(dim.source_key), sql.Identifier("mirror", dim.source)))
                tables.append(compare(dim.table, _rows(src, dim.derive("public"), iso),
                                      _rows(wh, _select(dim.table, dim.all_columns)),
                                      frozenset(r[0] for r in deleted)))
            dates = sql.SQL(" UNION ").join(
                fact.referenced_dates(sql.SQL("({}) AS f").format(_source_facts(i)))
                for i, fact in enumerate(FACTS))
            tables.append(compare("dim_date", _rows(src, date_rows(dates)),
                                  _rows(wh, _select("dim_date", DATE_COLUMNS)), may_stay=None))
            for i, fact in enumerate(FACTS):
                report = compare(fact.table, _rows(src, _source_facts(i)),
                                 _rows(wh, _select(fact.current_view, fact.names)))
                wh.execute(sql.SQL(
                    "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY source_lsn, source_seq "
                    "HAVING count(*) > 1) AS duplicates").format(sql.Identifier(fact.table)))
                report.duplicate_positions = wh.fetchone()[0]
                tables.append(report)
        return Report(tables)
    finally:
        source.close()
        warehouse.close()


def render(report: Report, as_json: bool = False) -> str:
    """The report as text (a line per table, then details of differences) or as JSON."""
    if as_json:
        return json.dumps({"ok": report.ok, "tables": [
            {**asdict(t), "differences": t.differences} for t in report.tables]}, indent=2)
    lines = [f"{'table':<22} {'compared':>9} {'differences':>11}"]
    for t in report.tables:
        lines.append(f"{t.table:<22} {t.compared:>9} {t.differences:>11}")
    for t in report.tables:
        for what, count, sample in (("missing from the warehouse", t.missing, t.sample_missing),
                                    ("extra in the warehouse", t.extra, t.sample_extra),
                                    ("different", t.different, t.sample_different)):
            if count:
                lines.append(f"{t.table}: {count} {what}, first keys: {sample}")
        if t.duplicate_positions:
            lines.append(f"{t.table}: {t.duplicate_positions} source positions held more than once")
    failing = [t.table for t in report.tables if t.differences]
    lines.append("reconcile: OK, warehouse matches source" if report.ok else
                 f"reconcile: DIFFERENCES in {len(failing)} table(s): {', '.join(failing)}")
    return "\n".join(lines)

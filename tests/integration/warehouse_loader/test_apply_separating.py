"""A stream file some of whose values the warehouse rejects is applied in parts
(apply.apply_separating): the rows it accepts at once, the rejected ones later, fixed and put back
at the file's key as the runbook says. Applied so, a file must end where it ends applied whole with
its values right:

- generated histories (inserts, updates, deletes, truncates and key changes of a few keys), cut
  into files as the stream processor cuts them, some rows of the stream files given a date the
  facts cannot cast: the files delivered in any order to several loaders at once (a delivery that
  fails with a retryable error, such as a deadlock between loaders, mid-split too, is delivered
  again whole), then the rejected rows, fixed. Each delivery rejects exactly the rows given a bad
  value, the warehouse is the model's for the history as it happened (test_model.py's comparison),
  and no fact version is held twice;
- a split whose connection is killed midway (some parts committed), then the file delivered again,
  then the fixed row: each accepted row is applied once, the rejected row is rejected again, and
  the warehouse is the one the fixed file gives applied whole.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import query as query_dsn
from tests.integration.warehouse_loader import model
from tests.integration.warehouse_loader.files import event, object_key, parquet_bytes
from tests.integration.warehouse_loader.test_apply import query, sales_order
from tests.integration.warehouse_loader.test_apply_order import state
from tests.integration.warehouse_loader.test_model import (
    MODEL_SETTINGS,
    apply_concurrently,
    differences,
    read_warehouse,
)
from tests.integration.warehouse_loader.test_model import new_warehouse as model_warehouse
from totes_cdc.contract import OP_INSERT, OP_UPDATE, Column
from totes_cdc.lakefiles import parquet_bytes as file_bytes
from totes_cdc.snapshot_marker import is_snapshot_key
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader.apply import apply_file, apply_separating, table_of
from warehouse_loader.derivation import FACTS_BY_SOURCE
from warehouse_loader.errors import RejectedValuesError, RetryableLoadError
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration

# One migrated warehouse, emptied for each example.
new_warehouse = model_warehouse
# Each example costs a split or two per poisoned file on top of a model example: fewer of them.
EXAMPLES = int(os.environ.get("TOTES_CDC_MODEL_EXAMPLES", "10"))
REJECTED_DATE = "soon"  # a date column's text the facts cannot cast to a date
# The modelled tables with facts: the ones whose date values the warehouse can reject.
FACT_SOURCES = tuple(table for table in model.TABLES if table in FACTS_BY_SOURCE)

Cell = tuple[str, int, int, str]  # (source table, lsn, seq, column): one value of one event
State = dict[str, list[str]]  # test_apply_order.state's: every row of every table


def deliver(conn: Any, key: str, data: bytes, fetch: Callable[[str], bytes] | None = None) -> bytes | None:
    """One delivery of a file, applied as the loader's handler applies it: whole, or, when the
    warehouse rejects values of a stream file, in parts. The rows rejected (Parquet), or None."""
    try:
        apply_file(conn, key, data, fetch=fetch)
    except RejectedValuesError:
        if is_snapshot_key(key):
            raise
        return apply_separating(conn, key, data).rejected
    return None


def positions(data: bytes | None) -> set[tuple[int, int]]:
    """The source positions (lsn, seq) of a file's rows."""
    if data is None:
        return set()
    table = pq.read_table(io.BytesIO(data))
    return set(zip(table["_lsn"].to_pylist(), table["_seq"].to_pylist(), strict=True))


def date_cells(key: str, data: bytes) -> dict[Cell, str]:
    """The date values (text the facts cast to dates) that a stream file's inserts and updates
    carry; none in a snapshot read's file or a file of a table without facts."""
    name = table_of(key)
    fact = FACTS_BY_SOURCE.get(name)
    if fact is None or is_snapshot_key(key):
        return {}
    table = pq.read_table(io.BytesIO(data))
    columns = [column for column in (expression.removesuffix("::date") for _, expression in fact.columns
                                     if expression.endswith("::date"))
               if column in table.column_names and table.schema.field(column).type == pa.string()]
    return {(name, row["_lsn"], row["_seq"], column): row[column]
            for row in table.to_pylist() if row["_op"] in (OP_INSERT, OP_UPDATE)
            for column in columns if row[column] is not None}


def with_values(key: str, data: bytes, values: Mapping[Cell, str]) -> bytes:
    """The file ``key`` (bytes ``data``) with ``values`` in the cells they name, the rest as is."""
    name = table_of(key)
    table = pq.read_table(io.BytesIO(data))
    events = list(zip(table["_lsn"].to_pylist(), table["_seq"].to_pylist(), strict=True))
    for column in sorted({column for table_name, _, _, column in values if table_name == name}):
        index = table.schema.get_field_index(column)
        new = [values.get((name, lsn, seq, column), value)
               for (lsn, seq), value in zip(events, table[column].to_pylist(), strict=True)]
        table = table.set_column(index, table.schema.field(index), pa.array(new, pa.string()))
    return file_bytes(table)


def doubled_fact_versions(dsn: str) -> list[tuple[Any, ...]]:
    """Fact versions (fact, key, lsn, seq) held more than once."""
    return query_dsn(dsn, " UNION ALL ".join(
        f"SELECT '{fact.table}', {fact.key}, source_lsn, source_seq, count(*) FROM {fact.table} "
        "GROUP BY 2, 3, 4 HAVING count(*) > 1"
        for fact in (FACTS_BY_SOURCE[source] for source in FACT_SOURCES)))


# --- generated histories, several loaders ----------------------------------------------------------

def fact_ops(kinds: Sequence[str] = model.KINDS) -> st.SearchStrategy[model.Op]:
    """The model's ops, on the tables with facts."""
    return st.tuples(model.ops(kinds), st.sampled_from(FACT_SOURCES)).map(
        lambda drawn: replace(drawn[0], table=drawn[1]))


def histories() -> st.SearchStrategy[model.History]:
    """The model's histories, their ops mostly on the tables with facts (the rows a split is about):
    rows read at the snapshot, then a few transactions of every kind of op on the same few keys."""
    transactions = st.builds(model.Transaction, st.lists(st.one_of(fact_ops(), model.ops()),
                                                         min_size=1, max_size=4).map(tuple),
                             st.integers(0, 8))
    return st.builds(model.History,
                     st.lists(st.one_of(fact_ops(("insert",)), model.ops(("insert",))),
                              max_size=6).map(tuple),
                     st.lists(transactions, min_size=1, max_size=6).map(tuple), st.booleans())


def deliveries() -> st.SearchStrategy[model.Delivery]:
    """The model's deliveries, in larger batches: files of several rows, so a split has parts."""
    return st.builds(model.Delivery, st.lists(st.integers(2, 16), min_size=1, max_size=3).map(tuple),
                     st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(1, 8)),
                              max_size=2).map(tuple))


def check_split(new_warehouse: Callable[[], str], columns: dict[str, tuple[Column, ...]],
                history: model.History, delivery: model.Delivery, arrival: model.Arrival,
                poison: Sequence[int]) -> None:
    written = model.processed_files(model.change_events(history, columns), delivery)
    cells = {f.key: date_cells(f.key, f.data) for f in written}
    originals = {cell: value for found in cells.values() for cell, value in found.items()}
    assume(originals)
    candidates = sorted(originals)
    bad = {candidates[i % len(candidates)] for i in poison}
    poisoned = {f.key: {(lsn, seq) for _, lsn, seq, _ in bad & cells[f.key].keys()} for f in written}
    files = [replace(f, data=with_values(f.key, f.data, dict.fromkeys(bad, REJECTED_DATE)))
             if poisoned[f.key] else f for f in written]
    dsn = new_warehouse()

    delivered = apply_concurrently(
        dsn, [(f.key, f.data) for f in arrival.order(files + model.lake_files(history, columns, delivery))],
        arrival.loaders, deliver)

    for key, rejected in delivered:
        assert positions(rejected) == poisoned.get(key, set()), f"the rows {key} had rejected"
    # The runbook's fix: the rejected rows, their values corrected, put back at the file's key.
    fixed = {key: with_values(key, rejected, {cell: originals[cell] for cell in bad})
             for key, rejected in delivered if rejected is not None}
    again = apply_concurrently(dsn, list(fixed.items()), arrival.loaders, deliver)
    assert [key for key, rejected in again if rejected is not None] == []
    diff = differences(model.expected(history, columns), read_warehouse(dsn, columns))
    assert not diff, "the warehouse differs from the model:\n" + "\n".join(diff)
    assert doubled_fact_versions(dsn) == []


@hypothesis_settings(MODEL_SETTINGS, max_examples=EXAMPLES)
@example(  # one file: order 1 inserted, updated with a rejected date, deleted; order 2 inserted
    history=model.History((), (
        model.Transaction((model.Op("insert", "sales_order", 1), model.Op("insert", "sales_order", 2))),
        model.Transaction((model.Op("update", "sales_order", 1, seeds=(None,) * 8 + (3,)),)),
        model.Transaction((model.Op("delete", "sales_order", 1),)))),
    delivery=model.Delivery((8,)), arrival=model.Arrival("any_order", (0,), 0, 2), poison=(4,))
@given(history=histories(), delivery=deliveries(),
       arrival=model.arrivals("any_order", max_loaders=4),
       poison=st.lists(st.integers(0, 1000), min_size=1, max_size=3))
def test_rejected_rows_put_back_fixed_give_the_model_warehouse_whatever_the_order_and_loaders(
        new_warehouse, totesys_columns, history, delivery, arrival, poison):
    check_split(new_warehouse, totesys_columns, history, delivery, arrival, poison)


# --- a split killed midway -------------------------------------------------------------------------

KEY = object_key("sales_order", 1, 8)
REJECTED = (200, 2)  # the position of the row with the value the warehouse rejects


def rows(agreed_payment_date: str) -> list[dict[str, Any]]:
    """Inserts, updates and deletes of three orders; order 2's update at REJECTED sets its agreed
    payment date, and its next update (TOAST-unchanged) keeps it."""
    return [
        event("c", 100, 1, sales_order(1)),
        event("c", 100, 2, sales_order(2)),
        event("c", 100, 3, sales_order(3)),
        event("u", 200, 1, sales_order(1, units_sold="7")),
        event("u", *REJECTED, sales_order(2, agreed_payment_date=agreed_payment_date)),
        event("d", 200, 3, {"sales_order_id": "3"}),
        event("u", 300, 1, sales_order(2, units_sold="9", agreed_payment_date=None),
              unchanged=["agreed_payment_date"]),
        event("d", 300, 2, {"sales_order_id": "1"}),
    ]


# The positions of the versions the fact history holds after the file, fixed, is applied.
VERSIONS = Counter((int(r["sales_order_id"]), r["_lsn"], r["_seq"]) for r in rows("2024-11-23"))
ACCEPTED = Counter({version: n for version, n in VERSIONS.items() if version[1:] != REJECTED})


@dataclass(frozen=True)
class Kill:
    """The instant the loader's backend is terminated: at the ``moment`` (start; middle: before
    its sixth statement; commit: as it commits) of its ``transaction``-th transaction, when
    ``committed`` of the file's rows are applied. The first delivery's transactions: 1 the file
    whole (rejected), 2 the first half (4 rows), 3 the second half (rejected), 4 its first
    quarter (rejected), 5 the rejected row alone, 6 the row after it, 7 the last quarter."""

    transaction: int
    moment: str
    committed: int

    def at(self, transaction: int, moment: str) -> bool:
        return (self.transaction, self.moment) == (transaction, moment)

    def __str__(self) -> str:
        return f"{self.moment} of transaction {self.transaction}"


class KilledConnection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A connection whose backend another connection terminates at the instant ``kill`` names."""

    def doom(self, kill: Kill, killer: Any) -> None:
        self.kill, self.killer = kill, killer
        self.transactions, self.statements, self.killed = 0, 0, False

    def __enter__(self) -> KilledConnection:
        self.transactions += 1
        self.statements = 0
        if self.kill.at(self.transactions, "start"):
            self.terminate()
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None and self.kill.at(self.transactions, "commit"):
            self.terminate()
        super().__exit__(*exc)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return super().cursor(*args, cursor_factory=KilledCursor, **kwargs)

    def statement(self) -> None:
        self.statements += 1
        if self.statements == 6 and self.kill.at(self.transactions, "middle"):
            self.terminate()

    def terminate(self) -> None:
        pid = self.get_backend_pid()
        query(self.killer, "SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while query(self.killer, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) != [(0,)]:
            assert time.monotonic() < deadline, "the backend outlived its termination"
            time.sleep(0.01)
        self.killed = True


class KilledCursor(psycopg2.extensions.cursor):  # type: ignore[misc]
    def execute(self, *args: Any, **kwargs: Any) -> None:
        self.connection.statement()
        super().execute(*args, **kwargs)

    def copy_expert(self, *args: Any, **kwargs: Any) -> None:
        self.connection.statement()
        super().copy_expert(*args, **kwargs)


def fact_versions(conn: Any) -> Counter[tuple[int, int, int]]:
    """How many times the fact history holds each version (order, lsn, seq)."""
    return Counter({(key, lsn, seq): n for key, lsn, seq, n in query(
        conn, "SELECT sales_order_id, source_lsn, source_seq, count(*) FROM fact_sales_order "
              "GROUP BY 1, 2, 3")})


@pytest.fixture(scope="module")
def fixed_file_applied_whole(warehouse_server: LocalPostgres,
                             totesys_columns: dict[str, tuple[Column, ...]]) -> Iterator[State]:
    """The warehouse the file gives applied whole with every value right, in a fresh warehouse."""
    conn = psycopg2.connect(warehouse_server.create_database(f"whole_{uuid.uuid4().hex[:10]}"))
    try:
        migrate(conn)
        apply_file(conn, KEY, parquet_bytes(totesys_columns["sales_order"], rows("2024-11-23")))
        yield state(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("kill", [Kill(3, "start", 4), Kill(4, "middle", 4), Kill(6, "commit", 4),
                                  Kill(7, "middle", 5), Kill(7, "commit", 5)], ids=str)
def test_a_split_killed_midway_then_delivered_again_applies_each_accepted_row_once(
        warehouse, warehouse_dsn, totesys_columns, fixed_file_applied_whole, kill):
    columns = totesys_columns["sales_order"]
    poisoned = parquet_bytes(columns, rows(REJECTED_DATE))
    doomed = psycopg2.connect(warehouse_dsn, connection_factory=KilledConnection)
    doomed.doom(kill, warehouse)
    with pytest.raises(RetryableLoadError):
        deliver(doomed, KEY, poisoned)
    assert doomed.killed
    doomed.close()
    committed = fact_versions(warehouse)
    assert committed.total() == kill.committed
    assert committed - ACCEPTED == Counter(), "a version committed twice, or the rejected one"

    conn = psycopg2.connect(warehouse_dsn)  # SQS delivers the file again, to a new connection
    try:
        rejected = deliver(conn, KEY, poisoned)
        assert rejected is not None
        assert positions(rejected) == {REJECTED}
        assert pq.read_table(io.BytesIO(rejected))["agreed_payment_date"].to_pylist() == [REJECTED_DATE]
        assert fact_versions(warehouse) == ACCEPTED

        cell = ("sales_order", *REJECTED, "agreed_payment_date")
        assert deliver(conn, KEY, with_values(KEY, rejected, {cell: "2024-11-23"})) is None
    finally:
        conn.close()
    assert fact_versions(warehouse) == VERSIONS
    assert state(warehouse) == fixed_file_applied_whole

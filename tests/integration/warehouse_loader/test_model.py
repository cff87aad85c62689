"""Model-based test of the loader: random source histories, cut into processed files the way the
stream processor cuts them, applied in random orders by concurrent loaders, must leave exactly the
warehouse the model says (tests/integration/warehouse_loader/model.py).

Each example: a history of a few totesys tables (a snapshot at C, then transactions at C or later:
inserts, updates with TOAST-unchanged columns, deletes, truncates, primary-key changes sent as
capture sends them: the old key's delete, then the new key's insert), its events routed to shards by
partition key, KPL records cut into batches and written by the stream processor's own functions
(one Parquet file per table and commit date per batch), some batches delivered again under another
range, one file delivered twice; the files applied into a freshly emptied migrated warehouse. Then
the mirror, the dimensions, dim_date, the current facts and the fact history must equal the model's.

Snapshot reads go to the lake as capture writes them (files of reads, then each table read's
completion marker); some snapshots are resumed, as after capture was killed during them (the rows of
the lower keys read at C, the rest at C2 after some of the transactions, one marker at C listing
both reads' files); some histories end with one or two resyncs of a few tables after deletes no
event reported (ghost rows the first read that missed them tombstones), some of them after a resync
killed part way (its first reads in the lake, no marker: it is run again), and a resync's read of
an unchanged row is no fact version.

- in stream order: one loader, each shard's files in the order written (shards interleaved);
- in any order, by 1 to 4 loaders at once (each its own connection; a retryable error, such as a
  deadlock, puts the file back in the queue, as SQS does);
- key changes whose new row keeps TOASTed values (default replica identity): a documented limit,
  marked xfail (strict) with the example Hypothesis shrank its failure to.

A key change's new row is otherwise complete, as capture sends it under REPLICA IDENTITY FULL.

The suite runs ``TOTES_CDC_MODEL_EXAMPLES`` examples per test (default 25, a few tenths of a second
each); a long run sets more::

    TOTES_CDC_MODEL_EXAMPLES=1000 .venv/bin/pytest -p no:cacheprovider -n 0 \\
        tests/integration/warehouse_loader/test_model.py
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, example, given, settings
from psycopg2 import sql

from tests.integration.warehouse_loader import model
from totes_cdc.contract import GHOST_SEQ, Column
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader.apply import apply_file
from warehouse_loader.derivation import DIMENSIONS_BY_TABLE, FACTS_BY_SOURCE
from warehouse_loader.errors import RetryableLoadError
from warehouse_loader.migrate import migrate

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TOTES_CDC_MODEL_EXAMPLES", "25"))
MAX_ATTEMPTS = 20  # deliveries of one file that fail with a retryable error before the test gives up
# How a loader applies a delivered file: (conn, key, data, fetch of a file a marker lists).
Deliver = Callable[[Any, str, bytes, Callable[[str], bytes]], Any]
# derandomize: the suite runs the same generated histories every time (a gate must not pass or
# fail by luck); set TOTES_CDC_MODEL_RANDOM=1 to search new ones (that search found the examples
# below, and the case of test_a_row_truncated_before_a_resync_ends_at_its_truncate).
MODEL_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                          derandomize=os.environ.get("TOTES_CDC_MODEL_RANDOM") != "1",
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def new_warehouse(warehouse_server: LocalPostgres) -> Iterator[Callable[[], str]]:
    """A function that empties one migrated warehouse (every table of its schemas, identities
    restarted: as freshly migrated, in a fifth of the time) and gives its DSN; one per example.

    The loader's per-file warnings (truncates, unknown currency codes) are expected here: muted.
    """
    dsn = warehouse_server.create_database(f"model_{uuid.uuid4().hex[:10]}")
    conn = psycopg2.connect(dsn)
    loader_log = logging.getLogger("warehouse_loader.apply")
    level = loader_log.level
    loader_log.setLevel(logging.ERROR)
    try:
        migrate(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
                        "AND tablename <> 'schema_migrations'")
            tables = sql.SQL(", ").join(sql.SQL(name) for name, in cur.fetchall())
        conn.commit()

        def empty() -> str:
            with conn, conn.cursor() as cur:
                cur.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(tables))
            return dsn

        yield empty
    finally:
        loader_log.setLevel(level)
        conn.close()


def apply_concurrently(dsn: str, files: Sequence[tuple[str, bytes]], workers: int,
                       deliver: Deliver = apply_file) -> list[tuple[str, Any]]:
    """Deliver ``files`` (in this order of delivery) to ``workers`` loaders at once, each on its
    own connection, with ``deliver`` (conn, key, data, fetch; a snapshot's marker reads the files
    it lists with fetch); each completed delivery's key and what ``deliver`` returned. A
    retryable error (a deadlock between loaders) closes the loader's connection and puts the
    file back in the queue, as the handler and SQS do."""
    stored = dict(files)
    pending: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
    for key, data in files:
        pending.put((key, data, 1))
    delivered: list[tuple[str, Any]] = []
    failures: list[BaseException] = []

    def loader() -> None:
        conn = psycopg2.connect(dsn)
        try:
            while not failures:
                try:
                    key, data, attempt = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    delivered.append((key, deliver(conn, key, data, stored.__getitem__)))
                except RetryableLoadError as exc:
                    if attempt == MAX_ATTEMPTS:
                        failures.append(exc)
                    pending.put((key, data, attempt + 1))
                    conn.close()
                    conn = psycopg2.connect(dsn)
                except BaseException as exc:  # reported by the test thread
                    failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=loader, name=f"loader-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return delivered


def read_warehouse(dsn: str, columns: dict[str, tuple[Column, ...]]) -> model.Warehouse:
    """What the warehouse holds, in the model's form."""
    found = model.Warehouse()
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            for table in model.TABLES:
                names = [c.name for c in columns[table]]
                key = next(i for i, c in enumerate(columns[table]) if c.key)
                cur.execute(sql.SQL("SELECT {}, source_lsn, source_seq, is_deleted FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier("mirror", table)))
                found.mirror[table] = {row[key]: (tuple(row[:len(names)]), (row[-3], row[-2]), row[-1])
                                       for row in cur.fetchall()}
            for name in ("dim_location", "dim_counterparty", "dim_currency", "dim_staff"):
                dim = DIMENSIONS_BY_TABLE[name]
                cur.execute(sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, dim.all_columns)), sql.Identifier(name)))
                found.dimensions[name] = {row[0]: tuple(row[1:]) for row in cur.fetchall()}
            for source in ("sales_order", "payment"):
                fact = FACTS_BY_SOURCE[source]
                cols = sql.SQL(", ").join(map(sql.Identifier, fact.names))
                width = len(fact.names)
                cur.execute(sql.SQL("SELECT {}, source_op, source_lsn, source_seq FROM {}").format(
                    cols, sql.Identifier(fact.current_view)))
                found.current[fact.table] = {row[0]: (tuple(row[:width]), *row[width:])
                                             for row in cur.fetchall()}
                cur.execute(sql.SQL(
                    "SELECT {}, source_op, source_lsn, source_seq, source_commit_ts, is_deleted "
                    "FROM {} ORDER BY {}, source_lsn, fact_version_seq(source_seq), source_seq").format(
                        cols, sql.Identifier(fact.table), sql.Identifier(fact.key)))
                history: dict[int, list[tuple[Any, ...]]] = {}
                for row in cur.fetchall():
                    op, lsn, seq, commit_ts, deleted = row[width:]
                    # A tombstone no single event made (a truncate's) encodes more than its seq;
                    # a ghost tombstone's commit time is the sweep's when its read was empty.
                    seq = None if op == "d" and seq < 0 else seq
                    commit_ts = None if op == "d" and seq == GHOST_SEQ else commit_ts
                    history.setdefault(row[0], []).append((tuple(row[:width]), op, lsn, seq, commit_ts,
                                                           deleted))
                found.history[fact.table] = history
            cur.execute("SELECT date_id, year, month, day, day_of_week, day_name, month_name, quarter "
                        "FROM dim_date")
            for date_id, *derived in cur.fetchall():
                assert derived == [date_id.year, date_id.month, date_id.day, date_id.isoweekday(),
                                   date_id.strftime("%A"), date_id.strftime("%B"),
                                   (date_id.month - 1) // 3 + 1], f"dim_date row {date_id}"
                found.dates.add(date_id)
    finally:
        conn.close()
    return found


def differences(expected: model.Warehouse, found: model.Warehouse) -> list[str]:
    """Every way ``found`` departs from ``expected``, named by sub-property and key."""
    out = []
    for part in ("mirror", "dimensions", "current", "history"):
        want, got = getattr(expected, part), getattr(found, part)
        for table in want:
            for key in sorted(set(want[table]) | set(got[table])):
                if want[table].get(key) != got[table].get(key):
                    out.append(f"{part} {table} key {key}:\n  model:     {want[table].get(key)}\n"
                               f"  warehouse: {got[table].get(key)}")
    if missing := expected.dates - found.dates:
        out.append(f"dim_date lacks {sorted(missing)}")
    return out


def check(new_warehouse: Callable[[], str], columns: dict[str, tuple[Column, ...]],
          history: model.History, delivery: model.Delivery, arrival: model.Arrival) -> None:
    files = (model.processed_files(model.change_events(history, columns), delivery)
             + model.lake_files(history, columns, delivery))
    dsn = new_warehouse()
    apply_concurrently(dsn, [(f.key, f.data) for f in arrival.order(files)], arrival.loaders)
    diff = differences(model.expected(history, columns), read_warehouse(dsn, columns))
    assert not diff, "the warehouse differs from the model:\n" + "\n".join(diff)


@MODEL_SETTINGS
@example(  # a ghost whose only read arrives after the resync's sweep: it takes the general way
    history=model.History((model.Op("insert", "address", 1),), (), resync=("address",),
                          lost=(model.Op("delete", "address", 1),)),
    delivery=model.Delivery((1,), (), 1), arrival=model.Arrival("in_order", (1,), 0, 1))
@given(history=model.histories(), delivery=model.deliveries(), arrival=model.arrivals("in_order"))
def test_files_in_stream_order_give_the_model_warehouse(new_warehouse, totesys_columns, history,
                                                        delivery, arrival):
    check(new_warehouse, totesys_columns, history, delivery, arrival)


@MODEL_SETTINGS
@example(  # a resync: order 1's read equal to its update (no fact), order 2 deleted unheard (a ghost)
    history=model.History(
        (model.Op("insert", "sales_order", 1), model.Op("insert", "sales_order", 2)),
        (model.Transaction((model.Op("update", "sales_order", 1, seeds=(None,) * 5 + (9,)),)),),
        resync=("sales_order",), lost=(model.Op("delete", "sales_order", 2),)),
    delivery=model.Delivery(snapshot_file_rows=1), arrival=model.Arrival("any_order", (3, 1, 2), 0, 2))
@example(  # two resyncs after a delete nothing reported: the first read that missed it ends it
    history=model.History(
        (model.Op("insert", "sales_order", 1), model.Op("insert", "sales_order", 2)), (),
        resync=("sales_order",), lost=(model.Op("delete", "sales_order", 2),), rounds=2),
    # both resyncs' markers come before the first read of the deleted order
    delivery=model.Delivery(snapshot_file_rows=1),
    arrival=model.Arrival("any_order", (9, 9, 9, 5, 1, 5, 2), 0, 1))
@given(history=model.histories(), delivery=model.deliveries(),
       arrival=model.arrivals("any_order", max_loaders=4))
def test_files_in_any_order_by_concurrent_loaders_give_the_model_warehouse(
        new_warehouse, totesys_columns, history, delivery, arrival):
    check(new_warehouse, totesys_columns, history, delivery, arrival)


@pytest.mark.parametrize("priorities", [(1,), (0, 1)], ids=["truncate before the sweep",
                                                            "truncate after the sweep"])
def test_a_row_truncated_before_a_resync_ends_at_its_truncate(new_warehouse, totesys_columns,
                                                             priorities):
    """A truncate below a resync's read ends the row: the read's sweep adds no ghost tombstone,
    and one it added before the truncate arrived is removed (both found by the in-order property:
    the sweep read liveness from the truncate tombstones, derived after it, and a late truncate
    rechecked the ghosts of no row)."""
    history = model.History((), (model.Transaction((model.Op("insert", "address", 1),
                                                    model.Op("truncate", "address", 1))),),
                            resync=("address",))
    check(new_warehouse, totesys_columns, history, model.Delivery((1,), (), 1),
          model.Arrival("in_order", priorities, 0, 1))


@pytest.mark.xfail(strict=True, reason=(
    "known limit (docs/warehouse_loader.md, docs/capture.md): under the default replica identity a "
    "key change's insert lists TOAST-unchanged columns, and the loader looks for their values in "
    "the new key's earlier versions (none: null), not in the old key's delete at seq - 1"))
@MODEL_SETTINGS
@example(  # what Hypothesis shrank it to: address 2 read at C, its key set to 1 keeping a TOASTed city
    history=model.History((model.Op("insert", "address", 2),), (model.Transaction((model.Op(
        "rekey", "address", 2, toast=(False, False, False, True), new_key=1),)),)),
    delivery=model.Delivery(), arrival=model.Arrival("in_order"))
@given(history=model.histories(toasted_key_changes=True), delivery=model.deliveries(),
       arrival=model.arrivals("any_order", max_loaders=4))
def test_key_changes_keeping_toasted_values_give_the_model_warehouse(
        new_warehouse, totesys_columns, history, delivery, arrival):
    check(new_warehouse, totesys_columns, history, delivery, arrival)


"""reconcile's history check: fact versions against the change events of the raw zone.

Change events are built from a real totesys source's rows, go through the stream processor's own
write path (raw Avro and processed Parquet in the emulator's S3) and are applied by the loader;
then the warehouse is damaged one way at a time, and reconcile must fail, naming what is wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extras import execute_values

from stream_processors.config import ProcessorConfig
from stream_processors.files import BatchId
from stream_processors.records import ParsedRecord, typed_event
from stream_processors.store import ObjectStore, write_batch
from tests.conftest import query
from tests.integration.warehouse_loader.files import source_columns
from totes_cdc import contract
from totes_cdc.contract import ChangeEvent, snapshot_seq
from totes_cdc.settings import settings
from totes_ops.cli import main
from totes_ops.stack import seed, synthetic
from totes_ops.stack.emulator import Emulator, client_env, create_resources
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader.apply import apply_file
from warehouse_loader.derivation import FACTS, FACTS_BY_SOURCE
from warehouse_loader.migrate import migrate
from warehouse_loader.reconcile import RawZone, Report, history, reconcile, render

pytestmark = pytest.mark.integration

ORDERS = 12  # orders kept from the synthetic seed: a small source, every table present
SNAPSHOT_LSN = 1000


def commit_time(lsn: int) -> dt.datetime:
    """The commit time the events of ``lsn`` carry: a microsecond per LSN."""
    return dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC) + dt.timedelta(microseconds=lsn)


class Source:
    """A totesys source and the change events its changes make, delivered through the pipeline's
    write path and applied by the loader (one batch per delivery, in order)."""

    def __init__(self, dsn: str, warehouse_dsn: str, warehouse: Any, s3: Any) -> None:
        self.dsn, self.warehouse_dsn, self.warehouse, self.s3 = dsn, warehouse_dsn, warehouse, s3
        self.conn = psycopg2.connect(dsn)
        self.batches = 0
        self.lsn = SNAPSHOT_LSN

    def rows(self, table: str, where: str = "true") -> list[dict[str, str | None]]:
        columns = source_columns(self.conn, table)
        with self.conn.cursor() as cur:
            cur.execute("SELECT {} FROM public.{} WHERE {} ORDER BY public.{}.{}".format(  # nosec B608
                ", ".join(f'"{c.name}"::text' for c in columns), table, where, table, columns[0].name))
            rows = [dict(zip([c.name for c in columns], r, strict=True)) for r in cur.fetchall()]
        self.conn.commit()
        return rows

    def event(self, op: str, table: str, seq: int, values: dict[str, str | None],
              lsn: int | None = None) -> ChangeEvent:
        columns = () if op == "t" else source_columns(self.conn, table)
        self.conn.commit()
        position = lsn or self.lsn
        return ChangeEvent(op, "public", table, position, seq, commit_time(position), columns,
                           before={c.name: values[c.name] for c in columns if c.key} if op == "d"
                           else None,
                           after=None if op in ("d", "t") else values, snapshot=op == "r")

    def snapshot(self, lsn: int = SNAPSHOT_LSN) -> None:
        self.deliver([self.event("r", table, snapshot_seq(n), row, lsn)
                      for table in seed.LOAD_ORDER
                      for n, row in enumerate(self.rows(table), start=1)])

    def commit(self, statements: list[str], changed: list[tuple[str, str, str]]) -> None:
        """Run ``statements`` in one source transaction and deliver one event per
        row of ``changed`` (op, table, WHERE), read after (c, u) or before (d) the transaction."""
        self.lsn += 1000
        before = [(op, table, row) for op, table, where in changed if op == "d"
                  for row in self.rows(table, where)]
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        self.conn.commit()
        after = [(op, table, row) for op, table, where in changed if op != "d"
                 for row in self.rows(table, where)]
        self.deliver([self.event(op, table, n, row)
                      for n, (op, table, row) in enumerate(before + after, start=1)])

    def deliver(self, events: list[ChangeEvent]) -> None:
        self.batches += 1
        parsed = [ParsedRecord(str(n), (typed_event(contract.encode(e)),), ())
                  for n, e in enumerate(events)]
        result = write_batch(ObjectStore(self.s3), ProcessorConfig.from_settings(),
                             BatchId("shardId-000000000000", str(self.batches), str(self.batches)),
                             parsed, "arn:aws:kinesis:eu-west-2:1:stream/s")
        for key in result.processed_keys:
            body = self.s3.get_object(Bucket=settings()["buckets"]["processed"], Key=key)["Body"]
            apply_file(self.warehouse, key, body.read())


@cache
def small_seed() -> dict[str, list[dict[str, Any]]]:
    """The synthetic seed's reference rows and its first ORDERS orders with their transactions
    and payments, in load order."""
    rows = synthetic.generate()
    rows["transaction"] = [t for t in rows["transaction"] if t["transaction_id"] <= ORDERS]
    rows["payment"] = [p for p in rows["payment"] if p["payment_id"] <= ORDERS]
    for order in ("sales_order", "purchase_order"):
        ids = {t[f"{order}_id"] for t in rows["transaction"]}
        rows[order] = [o for o in rows[order] if o[f"{order}_id"] in ids]
    return {table: rows[table] for table in seed.LOAD_ORDER}


def build(source_dsn: str, warehouse_dsn: str, warehouse: Any, s3: Any) -> Source:
    """A small totesys source, snapshotted, then: a payment paid, a payment edited twice, a payment
    deleted, a payment inserted, a sales order updated; all of it loaded and matching."""
    conn = psycopg2.connect(source_dsn)
    with conn, conn.cursor() as cur:
        for table, rows in small_seed().items():
            execute_values(cur, sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, rows[0]))).as_string(cur),
                [tuple(row.values()) for row in rows])
    conn.close()
    src = Source(source_dsn, warehouse_dsn, warehouse, s3)
    src.snapshot()
    src.commit(["UPDATE payment SET paid = NOT paid WHERE payment_id = 1"],
               [("u", "payment", "payment_id = 1")])
    src.commit(["UPDATE payment SET payment_amount = 1.50 WHERE payment_id = 3"],
               [("u", "payment", "payment_id = 3")])
    src.commit(["UPDATE payment SET payment_amount = 2.50 WHERE payment_id = 3",
                "DELETE FROM payment WHERE payment_id = 4",
                "UPDATE sales_order SET units_sold = 7 "
                "WHERE sales_order_id = (SELECT min(sales_order_id) FROM sales_order)"],
               [("u", "payment", "payment_id = 3"), ("d", "payment", "payment_id = 4"),
                ("u", "sales_order", "sales_order_id = (SELECT min(sales_order_id) FROM sales_order)")])
    src.commit(["INSERT INTO payment SELECT 100, created_at, last_updated, 4, counterparty_id, "
                "9.99, currency_id, payment_type_id, false, payment_date, company_ac_number, "
                "counterparty_ac_number FROM payment WHERE payment_id = 2"],
               [("c", "payment", "payment_id = 100")])
    return src


@dataclass
class Built:
    """A built source and warehouse, the raw zone's objects, and a copy of the facts to restore."""

    source: Source
    raw: dict[str, bytes]


@pytest.fixture(scope="module")
def built(source_server: LocalPostgres, warehouse_server: LocalPostgres,
          emulator_server: Emulator) -> Iterator[Built]:
    """One build for the tests that only damage the warehouse's facts (each gets them restored)."""
    source_dsn = source_server.create_database(f"src_{uuid.uuid4().hex[:10]}")
    warehouse_dsn = warehouse_server.create_database(f"wh_{uuid.uuid4().hex[:10]}")
    conn = psycopg2.connect(source_dsn)
    seed.create_schema(conn)
    conn.close()
    warehouse = psycopg2.connect(warehouse_dsn)
    migrate(warehouse)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in client_env(emulator_server.endpoint).items():
            patch.setenv(key, value)
        urllib.request.urlopen(urllib.request.Request(  # nosec B310
            f"{emulator_server.endpoint}/moto-api/reset", method="POST"), timeout=10).close()
        create_resources(emulator_server, {})
        src = build(source_dsn, warehouse_dsn, warehouse, emulator_server.client("s3"))
        bucket = settings()["buckets"]["raw"]
        s3 = emulator_server.client("s3")
        raw = {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
               for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    with warehouse, warehouse.cursor() as cur:
        cur.execute("CREATE SCHEMA pristine")
        for fact in FACTS:
            cur.execute(f"CREATE TABLE pristine.{fact.table} AS TABLE {fact.table}")  # nosec B608
    yield Built(src, raw)
    src.conn.close()
    warehouse.close()


@pytest.fixture
def source(aws, built: Built) -> Source:
    """The built source and warehouse, its facts as built, its raw zone in the (reset) emulator."""
    s3 = aws.client("s3")
    for key, body in built.raw.items():
        s3.put_object(Bucket=settings()["buckets"]["raw"], Key=key, Body=body)
    warehouse = built.source.warehouse
    with warehouse, warehouse.cursor() as cur:
        for fact in FACTS:
            cur.execute(f"TRUNCATE {fact.table}")  # nosec B608
            cur.execute(f"INSERT INTO {fact.table} OVERRIDING SYSTEM VALUE "  # nosec B608
                        f"SELECT * FROM pristine.{fact.table}")
    built.source.s3 = s3
    return built.source


@pytest.fixture
def fresh_source(aws, totesys_dsn, warehouse_dsn, warehouse) -> Iterator[Source]:
    """A build of its own, for the tests that change the source or the raw zone."""
    src = build(totesys_dsn, warehouse_dsn, warehouse, aws.client("s3"))
    yield src
    src.conn.close()


def check(src: Source) -> Report:
    return reconcile(src.dsn, src.warehouse_dsn, RawZone.from_settings())


def damage(src: Source, statement: str) -> None:
    with src.warehouse.cursor() as cur:
        cur.execute(statement)
        assert cur.rowcount >= 1, statement
    src.warehouse.commit()


def failing(report: Report) -> dict[str, dict[str, Any]]:
    return {t.table: {"missing": t.missing, "extra": t.extra, "different": t.different,
                      "sample": t.sample_missing + t.sample_extra + t.sample_different}
            for t in report.tables if t.differences}


def test_a_loaded_history_passes_and_says_what_it_compared(source: Source) -> None:
    report = check(source)
    assert report.ok, render(report)
    tables = {t.table: t for t in report.tables}
    # 12 snapshot reads, 3 updates, 1 delete, 1 insert.
    assert tables["fact_payment history"].compared == ORDERS + 5
    assert tables["raw zone payment"].compared == ORDERS
    assert report.compared["history"] is True
    assert report.compared["history_through"] == {"lsn": "0/1388", "seq": 1}  # LSN 5000
    # Snapshot reads of the 12 orders and their 12 payments, then 6 changes.
    assert report.compared["raw_events"] == 2 * ORDERS + 6
    text = render(report)
    assert "through commit LSN 0/1388 position 1" in text and "reconcile: OK" in text


def test_a_missing_fact_version_fails_though_the_current_state_matches(source: Source) -> None:
    damage(source, "DELETE FROM fact_payment WHERE payment_id = 3 AND source_lsn = 3000")
    report = check(source)
    assert failing(report) == {"fact_payment history": {
        "missing": 1, "extra": 0, "different": 0, "sample": ["3@0/BB8:1"]}}
    assert "fact_payment history: 1 missing from the warehouse, first keys: ['3@0/BB8:1']" in (
        render(report))


def test_an_extra_fact_version_fails(source: Source) -> None:
    damage(source, "INSERT INTO fact_payment (payment_id, paid, source_op, source_lsn, source_seq, "
                   "source_commit_ts) SELECT payment_id, paid, 'u', 2500, 1, source_commit_ts "
                   "FROM fact_payment WHERE payment_id = 3 AND source_lsn = 3000")
    assert failing(check(source)) == {"fact_payment history": {
        "missing": 0, "extra": 1, "different": 0, "sample": ["3@0/9C4:1"]}}


def test_a_wrong_op_fails(source: Source) -> None:
    damage(source, "UPDATE fact_payment SET source_op = 'c' WHERE payment_id = 5 AND source_op = 'r'")
    assert failing(check(source)) == {"fact_payment history": {
        "missing": 0, "extra": 0, "different": 1, "sample": [f"5@0/3E8:{snapshot_seq(5)}"]}}


def test_a_wrong_commit_time_fails(source: Source) -> None:
    damage(source, "UPDATE fact_payment SET source_commit_ts = source_commit_ts + interval '1 s' "
                   "WHERE payment_id = 1 AND source_op = 'u'")
    assert list(failing(check(source))) == ["fact_payment history"]


def test_a_tombstone_with_wrong_values_fails(source: Source) -> None:
    damage(source, "UPDATE fact_payment SET payment_amount = 0 WHERE payment_id = 4 AND source_op = 'd'")
    assert failing(check(source)) == {"fact_payment history": {
        "missing": 0, "extra": 0, "different": 1, "sample": ["4@0/FA0:1"]}}


def test_a_ghost_current_row_fails_in_the_current_state_and_the_history(source: Source) -> None:
    damage(source, "UPDATE fact_payment SET is_deleted = false WHERE payment_id = 4 AND source_op = 'd'")
    assert failing(check(source)) == {
        "fact_payment": {"missing": 0, "extra": 1, "different": 0, "sample": [4]},
        "fact_payment history": {"missing": 0, "extra": 0, "different": 1, "sample": ["4@0/FA0:1"]}}


def test_a_fact_version_of_a_row_the_source_never_had_fails(source: Source) -> None:
    damage(source, "INSERT INTO fact_payment (payment_id, source_op, source_lsn, source_seq, "
                   "source_commit_ts) VALUES (999, 'c', 6000, 1, now())")
    report = failing(check(source))
    assert report["fact_payment"]["sample"] == [999]
    assert report["fact_payment history"] == {"missing": 0, "extra": 1, "different": 0,
                                              "sample": ["999@0/1770:1"]}


def test_a_change_the_raw_zone_lacks_fails_as_not_caught_up(fresh_source: Source) -> None:
    """A source change still in flight (or lost before the raw zone): the raw zone's replay differs
    from the source, and so does the warehouse's current state."""
    source = fresh_source
    with source.conn.cursor() as cur:
        cur.execute("UPDATE payment SET paid = NOT paid WHERE payment_id = 2")
    source.conn.commit()
    report = failing(check(source))
    assert report["raw zone payment"] == {"missing": 0, "extra": 0, "different": 1, "sample": [2]}
    assert report["fact_payment"]["sample"] == [2]
    assert "fact_payment history" not in report


def test_a_truncate_needs_a_tombstone_for_every_current_row(fresh_source: Source) -> None:
    source = fresh_source
    source.lsn += 1000
    with source.conn.cursor() as cur:
        cur.execute("TRUNCATE payment")
    source.conn.commit()
    source.deliver([source.event("t", "payment", 1, {})])
    report = check(source)
    assert report.ok, render(report)
    assert {t.table: t.compared for t in report.tables}["fact_payment history"] == ORDERS + 5 + ORDERS
    damage(source, "DELETE FROM fact_payment WHERE source_seq = -(1 * 2147483648 + 2)")
    assert failing(check(source)) == {  # the row is current again, too
        "fact_payment": {"missing": 0, "extra": 1, "different": 0, "sample": [2]},
        "fact_payment history": {"missing": 1, "extra": 0, "different": 0,
                                 "sample": ["2@0/1770:-2147483650"]}}


def test_a_re_read_snapshot_row_is_one_version_but_not_two(fresh_source: Source) -> None:
    """A resumed snapshot re-reads rows at a new position: the loader keeps one version of equal
    reads, and reconcile wants exactly one."""
    source = fresh_source
    source.deliver([source.event("r", "payment", snapshot_seq(n), row, lsn=1500)  # unchanged
                    for n, row in enumerate(source.rows("payment", "payment_id BETWEEN 5 AND 12"),
                                            start=1)])
    assert check(source).ok, render(check(source))
    assert query(source.warehouse_dsn,
                 "SELECT count(*) FROM fact_payment WHERE source_lsn = 1500") == [(0,)]
    # Had the re-read been applied first, it would be the version kept: that passes too.
    damage(source, f"UPDATE fact_payment SET source_lsn = 1500, source_seq = {snapshot_seq(1)}, "
                   "source_commit_ts = source_commit_ts + interval '500 microseconds' "
                   f"WHERE source_lsn = 1000 AND source_seq = {snapshot_seq(5)}")
    assert check(source).ok
    columns = ", ".join(FACTS_BY_SOURCE["payment"].names)
    damage(source, f"INSERT INTO fact_payment ({columns}, source_op, source_lsn, source_seq, "
                   f"source_commit_ts) SELECT {columns}, 'r', 1000, {snapshot_seq(5)}, "
                   "source_commit_ts - interval '500 microseconds' FROM fact_payment "
                   "WHERE source_lsn = 1500")  # both reads kept
    assert failing(check(source)) == {"fact_payment history": {
        "missing": 0, "extra": 1, "different": 0, "sample": [f"5@0/3E8:{snapshot_seq(5)}"]}}


def test_the_command_compares_history_unless_told_not_to(source: Source, capsys) -> None:
    damage(source, "DELETE FROM fact_payment WHERE payment_id = 3 AND source_lsn = 3000")
    args = ["reconcile", "--source-dsn", source.dsn, "--warehouse-dsn", source.warehouse_dsn]
    assert main([*args, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["compared"]["history"] is True and out["ok"] is False
    assert main([*args, "--no-history"]) == 0
    assert "fact history not compared" in capsys.readouterr().out


def test_an_unreachable_raw_zone_is_a_clear_error(source: Source, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert main(["reconcile", "--source-dsn", source.dsn,
                 "--warehouse-dsn", source.warehouse_dsn]) == 2
    assert "cannot read the raw zone s3://totes-cdc-raw/raw/public." in capsys.readouterr().err


def test_history_replays_deletes_truncates_and_toast_unchanged_columns() -> None:
    ts = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def record(op: str, lsn: int, seq: int, after: dict[str, str | None] | None = None,
               before: dict[str, str | None] | None = None, unchanged: tuple[str, ...] = ()):
        return {"op": op, "lsn": lsn, "seq": seq, "commit_ts": ts, "after": after,
                "before": before, "unchanged": list(unchanged)}

    replay = history([
        record("u", 30, 1, {"id": "1", "note": None, "n": "3"}, unchanged=("note",)),
        record("r", 10, 1, {"id": "1", "note": "long", "n": "1"}),
        record("r", 10, 2, {"id": "2", "note": "x", "n": "1"}),
        record("r", 10, 2, {"id": "2", "note": "x", "n": "1"}),  # the same event, twice
        record("d", 40, 1, before={"id": "2"}),
        record("c", 50, 1, {"id": "3", "note": "y", "n": "1"}),
        record("t", 60, 2),
        record("d", 70, 1, before={"id": "9"}),
    ], "id")
    assert [(v.op, v.lsn, v.seq, v.key, v.values) for v in replay.versions] == [
        ("r", 10, 1, "1", {"id": "1", "note": "long", "n": "1"}),
        ("r", 10, 2, "2", {"id": "2", "note": "x", "n": "1"}),
        ("u", 30, 1, "1", {"id": "1", "note": "long", "n": "3"}),
        ("d", 40, 1, "2", {"id": "2", "note": "x", "n": "1"}),
        ("c", 50, 1, "3", {"id": "3", "note": "y", "n": "1"}),
        ("d", 60, -(2 * 2**31 + 1), "1", {"id": "1", "note": "long", "n": "3"}),
        ("d", 60, -(2 * 2**31 + 3), "3", {"id": "3", "note": "y", "n": "1"}),
        ("d", 70, 1, "9", {"id": "9"}),
    ]
    assert replay.current == {}

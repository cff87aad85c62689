"""Warehouse migrations: idempotent, serialised, and the schema docs/warehouse.md describes."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from totes_cdc.errors import DatabaseError
from totes_ops.cli import main
from warehouse_loader import migrate as migrate_module
from warehouse_loader.config import LoaderConfig
from warehouse_loader.errors import RetryableLoadError
from warehouse_loader.handler import Loader
from warehouse_loader.migrate import available, migrate, pending

pytestmark = pytest.mark.integration


def test_migrate_is_idempotent_and_records_each_version(warehouse_dsn, capsys):
    assert main(["warehouse", "migrate", "--warehouse-dsn", warehouse_dsn]) == 0
    assert "001_star_schema, 002_mirror" in capsys.readouterr().out
    assert main(["warehouse", "migrate", "--warehouse-dsn", warehouse_dsn]) == 0
    assert "none (already up to date)" in capsys.readouterr().out

    conn = psycopg2.connect(warehouse_dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == [m.version for m in available()]
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                    "ORDER BY 1")
        tables = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'fact_purchase_order'")
        purchase_columns = {r[0] for r in cur.fetchall()}
    conn.close()
    assert {"dim_date", "dim_design", "dim_currency", "dim_location", "dim_counterparty",
            "dim_staff", "dim_payment_type", "dim_transaction", "fact_sales_order",
            "fact_purchase_order", "fact_payment", "fact_sales_order_current",
            "fact_purchase_order_current", "fact_payment_current"} <= tables
    assert {"purchase_order_id", "source_op", "source_lsn", "source_seq", "source_commit_ts",
            "loaded_at", "is_deleted"} <= purchase_columns


def test_concurrent_runners_apply_each_migration_once(warehouse_dsn):
    results: list[int] = []

    def run() -> None:
        conn = psycopg2.connect(warehouse_dsn)
        results.append(len(migrate(conn)))
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, len(available())]


def test_migrate_reports_an_unreachable_warehouse_in_one_line(capsys):
    dsn = "host=127.0.0.1 port=1 dbname=wh user=u password=hunter2 connect_timeout=2"
    assert main(["warehouse", "migrate", "--warehouse-dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to the warehouse database" in err and "hunter2" not in err


def test_a_failing_migration_leaves_nothing_behind_and_releases_the_lock(warehouse_dsn, monkeypatch):
    import warehouse_loader.migrate as migrations

    broken = [*available(), migrations.Migration(99, "broken", "CREATE TABLE half (x int); SELECT 1/0")]
    monkeypatch.setattr(migrations, "available", lambda: broken)
    conn = psycopg2.connect(warehouse_dsn)
    with pytest.raises(DatabaseError, match=r"^warehouse migration 099_broken: division by zero"):
        migrate(conn)
    monkeypatch.setattr(migrations, "available", lambda: broken[:-1])
    assert migrate(conn) == []  # the lock was released; the good migrations were kept
    with conn.cursor() as cur:
        cur.execute("SELECT max(version), to_regclass('half') FROM schema_migrations")
        assert cur.fetchone() == (broken[-2].version, None)
    conn.close()


def test_a_migration_the_warehouse_refuses_exits_2_with_one_line_naming_it(warehouse_dsn, monkeypatch,
                                                                           capsys):
    import warehouse_loader.migrate as migrations

    broken = [*available()[:2], migrations.Migration(3, "broken", "SELECT 1/0")]
    monkeypatch.setattr(migrations, "available", lambda: broken)
    assert main(["warehouse", "migrate", "--warehouse-dsn", warehouse_dsn]) == 2
    assert capsys.readouterr().err == (
        "totes-cdc: error: warehouse migration 003_broken: division by zero (SQLSTATE 22012)\n")


def test_the_lambda_loader_refuses_a_warehouse_its_migrations_are_not_applied_to(warehouse_dsn, monkeypatch):
    """It does not migrate (docs/deploy.md): it names what is missing and the command, until then."""
    every = available()
    loader = Loader(LoaderConfig.from_settings(lambda: warehouse_dsn), lambda *metric: None, s3=object())
    with pytest.raises(RetryableLoadError, match="lacks migrations 001_star_schema, 002_mirror"):
        loader._connection()
    conn = psycopg2.connect(warehouse_dsn)
    monkeypatch.setattr(migrate_module, "available", lambda: every[:-1])
    migrate(conn)
    monkeypatch.undo()
    assert pending(conn) == every[-1:]
    last = f"{every[-1].version:03d}_{every[-1].name}"
    with pytest.raises(RetryableLoadError, match=f"lacks migrations {last}: run `totes-cdc warehouse"):
        loader._connection()
    migrate(conn)
    assert pending(conn) == [] and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    conn.close()
    assert loader._connection() is not None
    loader.close()

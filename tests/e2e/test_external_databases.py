"""`totes-cdc up --source-dsn ... --warehouse-dsn ...` uses the user's servers instead of its own."""

from __future__ import annotations

import shutil

import psycopg2
import pytest

from tests.conftest import SEED_DIR, requires_real_data
from tests.e2e.conftest import start_stack, stop_stack
from totes_ops.stack import seed
from totes_ops.stack.postgres import LocalPostgres, make_base_dir

pytestmark = [pytest.mark.e2e, requires_real_data]


@pytest.fixture
def own_source():
    """A server the user runs (the stack must not start or stop it)."""
    base = make_base_dir()
    server = LocalPostgres(base / "users-own", logical=True)
    server.init()
    server.start()
    dsn = server.create_database("totesys")
    conn = psycopg2.connect(dsn)
    seed.create_schema(conn)
    seed.load_totesys(conn, SEED_DIR)
    conn.close()
    yield server, dsn
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_up_streams_from_the_given_source_into_the_given_warehouse(own_source, warehouse_dsn, tmp_path):
    server, source_dsn = own_source
    stack = start_stack(tmp_path / "state", "--source-dsn", source_dsn, "--warehouse-dsn", warehouse_dsn)
    try:
        assert stack.source_dsn == source_dsn and stack.warehouse_dsn == warehouse_dsn
        assert stack.info["seed"] == "none"
        assert not any(name.startswith("postgres-") for name in stack.info["processes"])
        report = stack.wait_reconciled()
        assert report["exit_code"] == 0, report
    finally:
        stop_stack(stack)
    assert server.pid() is not None  # still running: the stack stops only what it started
    psycopg2.connect(source_dsn).close()

"""Reconciliation of current state on the real totesys data: a loaded snapshot matches; a damaged
warehouse does not. (History against the raw zone: test_reconcile_history.py.)"""

from __future__ import annotations

import json

import psycopg2
import pytest

from tests.conftest import requires_real_data
from tests.integration.warehouse_loader.files import snapshot_files
from totes_ops.cli import main
from totes_ops.stack import seed
from warehouse_loader.apply import apply_file

pytestmark = [pytest.mark.integration, requires_real_data]


@pytest.fixture
def loaded(totesys_dsn, warehouse_dsn, warehouse):
    """The real totesys rows in a source database, and their snapshot loaded into the warehouse."""
    source = psycopg2.connect(totesys_dsn)
    seed.load_totesys(source)
    # Facts first: a fact may arrive before the dimension rows it references.
    for key, data in snapshot_files(source, seed.LOAD_ORDER[::-1]).items():
        apply_file(warehouse, key, data)
    source.close()
    return totesys_dsn, warehouse_dsn


def test_reconcile_passes_on_a_loaded_snapshot_and_names_the_keys_that_differ(loaded, warehouse,
                                                                              capsys):
    source_dsn, warehouse_dsn = loaded
    args = ["reconcile", "--source-dsn", source_dsn, "--warehouse-dsn", warehouse_dsn, "--no-history"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fact_payment" in out and "15836" in out and "reconcile: OK" in out

    with warehouse.cursor() as cur:
        cur.execute("UPDATE dim_staff SET department_name = 'Nowhere' WHERE staff_id IN (3, 4)")
        cur.execute("DELETE FROM fact_sales_order WHERE sales_order_id = 42")
        cur.execute("INSERT INTO dim_design (design_id, design_name) VALUES (99999, 'ghost')")
        cur.execute("UPDATE fact_payment SET paid = NOT paid WHERE payment_id = 7")
    warehouse.commit()

    assert main(args) == 1
    out = capsys.readouterr().out
    assert "dim_staff: 2 different, first keys: [3, 4]" in out
    assert "fact_sales_order: 1 missing from the warehouse, first keys: [42]" in out
    assert "dim_design: 1 extra in the warehouse, first keys: [99999]" in out
    assert "fact_payment: 1 different, first keys: [7]" in out

    assert main([*args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in report["tables"]}
    assert report["ok"] is False
    assert tables["dim_staff"]["sample_different"] == [3, 4]
    assert tables["fact_purchase_order"]["differences"] == 0
    assert tables["dim_date"]["compared"] > 0


def test_reconcile_accepts_dimension_rows_of_deleted_source_rows(loaded, warehouse, capsys):
    source_dsn, warehouse_dsn = loaded
    source = psycopg2.connect(source_dsn)
    with source.cursor() as cur:
        cur.execute("DELETE FROM design WHERE design_id NOT IN (SELECT design_id FROM sales_order) "
                    "RETURNING design_id")
        deleted = [r[0] for r in cur.fetchall()]
    source.commit()
    source.close()
    with warehouse.cursor() as cur:
        cur.execute("UPDATE mirror.design SET is_deleted = true WHERE design_id = ANY(%s)", (deleted,))
    warehouse.commit()

    assert deleted
    assert main(["reconcile", "--source-dsn", source_dsn, "--warehouse-dsn", warehouse_dsn,
                 "--no-history"]) == 0

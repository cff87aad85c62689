"""`totes-cdc reconcile` when a database cannot be read: exit 2 and one line naming which, never the
exit 1 of differences (a script reading the exit status must not take a failed read for them)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import query
from totes_ops.cli import main
from warehouse_loader import reconcile

pytestmark = pytest.mark.integration


def test_a_warehouse_without_the_schema_exits_2_naming_it(totesys_dsn, warehouse_dsn, capsys):
    """A warehouse database never migrated: the statement it refuses, on one line, exit 2."""
    assert main(["reconcile", "--source-dsn", totesys_dsn, "--warehouse-dsn", warehouse_dsn,
                 "--no-history"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("totes-cdc: error: reconcile cannot read the warehouse database: relation ")
    assert err.endswith("; not migrated? totes-cdc warehouse migrate\n") and len(err.splitlines()) == 1


def test_a_connection_lost_part_way_exits_2_naming_the_database(totesys_dsn, warehouse_dsn, warehouse,
                                                                capsys, monkeypatch):
    """The warehouse's server ends reconcile's session between two of its queries."""
    compare_current = reconcile._current_state

    def cut_off(src: Any, wh: Any) -> Any:
        query(warehouse_dsn, "SELECT pg_terminate_backend(%s)", (wh.connection.get_backend_pid(),))
        return compare_current(src, wh)

    monkeypatch.setattr(reconcile, "_current_state", cut_off)
    assert main(["reconcile", "--source-dsn", totesys_dsn, "--warehouse-dsn", warehouse_dsn,
                 "--no-history"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("totes-cdc: error: reconcile cannot read the warehouse database: "), err
    assert len(err.splitlines()) == 1

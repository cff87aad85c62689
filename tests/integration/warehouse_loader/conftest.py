"""Fixtures for the loader's integration tests: a migrated warehouse and the totesys columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from tests.integration.warehouse_loader.files import source_columns
from totes_cdc.contract import Column
from totes_ops.stack import seed
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader import apply
from warehouse_loader.migrate import migrate


@pytest.fixture(scope="session")
def totesys_columns(source_server: LocalPostgres) -> dict[str, tuple[Column, ...]]:
    """Each totesys table's columns as change events describe them, from a real totesys schema."""
    conn = psycopg2.connect(source_server.create_database("loader_columns"))
    try:
        seed.create_schema(conn)
        return {table: source_columns(conn, table) for table in seed.LOAD_ORDER}
    finally:
        conn.close()


@pytest.fixture
def warehouse(warehouse_dsn: str) -> Iterator[Any]:
    """A connection to a fresh, migrated warehouse."""
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    yield conn
    conn.close()


@pytest.fixture
def bulk_checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(source table, whether it took the bulk path) of every file of rows applied from now on,
    in order (the loader's own check, apply.is_snapshot_file, watched)."""
    found: list[tuple[str, bool]] = []
    check = apply.is_snapshot_file

    def watched(table: Any, spec: Any) -> bool:
        bulk = check(table, spec)
        found.append((spec.name, bulk))
        return bulk

    monkeypatch.setattr(apply, "is_snapshot_file", watched)
    return found


@pytest.fixture
def new_key_checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(source table, whether every key was new to the mirror) of every file of reads applied
    from now on before its table's read completed, in order: True, it inserted its mirror rows
    plainly; False, it went back to the general way (the loader's own apply._lock_keys, watched)."""
    found: list[tuple[str, bool]] = []
    lock_keys = apply._lock_keys

    def watched(cur: Any, spec: Any, staged: int, fresh: bool) -> bool:
        all_new = lock_keys(cur, spec, staged, fresh)
        if fresh:
            found.append((spec.name, all_new))
        return all_new

    monkeypatch.setattr(apply, "_lock_keys", watched)
    return found

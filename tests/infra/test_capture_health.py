"""The capture container's health check (infra/docker/capture_health.py) against a real server."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from types import ModuleType

import psycopg2
import psycopg2.extras
import pytest

from tests.infra.hcl import INFRA

pytestmark = pytest.mark.integration


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capture_health", INFRA / "docker" / "capture_health.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


health = _load()


@pytest.fixture
def slot(source_dsn: str) -> Iterator[str]:
    """A pgoutput slot (with its publication) on the source, dropped afterwards."""
    name = f"health_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(source_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE PUBLICATION {name} FOR ALL TABLES")
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    yield name
    with conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active", (name,))
    conn.close()


def test_missing_slot_is_unhealthy(source_dsn: str) -> None:
    assert health.slot_problem(source_dsn, "no_such_slot") == "replication slot no_such_slot does not exist"


def test_slot_without_reader_is_unhealthy_and_with_one_healthy(source_dsn: str, slot: str) -> None:
    assert health.slot_problem(source_dsn, slot) == f"replication slot {slot} has no reader"
    reader = psycopg2.connect(source_dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        reader.cursor().start_replication(slot_name=slot, decode=False,
                                          options={"proto_version": "1", "publication_names": slot})
        assert health.slot_problem(source_dsn, slot) is None
    finally:
        reader.close()


def test_unreachable_source_is_unhealthy_without_the_password(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from totes_cdc.stack.postgres import free_port

    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN",
                       f"host=127.0.0.1 port={free_port()} user=capture password=s3cret dbname=totesys")
    assert health.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("capture unhealthy: cannot connect to the source database")
    assert "s3cret" not in err

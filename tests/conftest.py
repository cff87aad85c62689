"""Fixtures shared by the whole suite: real PostgreSQL servers and the AWS emulator in server mode.

Each pytest worker starts its own servers once (session scope) on free ports and stops them at
the end; tests get fresh databases and a freshly reset emulator, so they never see each other.
A SIGTERM (``timeout``, a CI runner's cancel) ends the run as Ctrl-C does, so the servers are
stopped then too; only a SIGKILL leaves them running.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from totes_ops.stack import seed
from totes_ops.stack.emulator import Emulator, client_env, create_resources
from totes_ops.stack.postgres import LocalPostgres, make_base_dir

SEED_DIR = seed.default_seed_dir()
requires_real_data = pytest.mark.skipif(
    not seed.real_data_available(SEED_DIR), reason=f"real totesys data not found in {SEED_DIR}")


def query(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """The rows of one statement, on a connection of its own."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def pytest_configure(config: pytest.Config) -> None:
    """In the controller and in each worker: pytest tears its fixtures down on KeyboardInterrupt,
    not on SIGTERM's default (an immediate exit)."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def pg_base_dir() -> Iterator[Path]:
    base = make_base_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def source_server(pg_base_dir: Path) -> Iterator[LocalPostgres]:
    """A source server with wal_level=logical."""
    server = LocalPostgres(pg_base_dir / "source", logical=True)
    server.init()
    server.start()
    yield server
    server.stop(mode="immediate")


@pytest.fixture(scope="session")
def warehouse_server(pg_base_dir: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(pg_base_dir / "warehouse", logical=False)
    server.init()
    server.start()
    yield server
    server.stop(mode="immediate")


def _new_database(server: LocalPostgres, prefix: str) -> str:
    return server.create_database(f"{prefix}_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def source_dsn(source_server: LocalPostgres) -> str:
    """A fresh, empty database on the logical source server."""
    return _new_database(source_server, "src")


@pytest.fixture
def totesys_dsn(source_dsn: str) -> str:
    """A fresh source database with the totesys schema (no rows)."""
    conn = psycopg2.connect(source_dsn)
    try:
        seed.create_schema(conn)
    finally:
        conn.close()
    return source_dsn


@pytest.fixture
def warehouse_dsn(warehouse_server: LocalPostgres) -> str:
    """A fresh, empty warehouse database."""
    return _new_database(warehouse_server, "wh")


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = Emulator(log_path=tmp_path_factory.mktemp("emulator") / "moto.log")
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def aws(emulator_server: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, reset, with the pipeline's resources created and boto3 pointed at it."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(
        f"{emulator_server.endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for key, value in client_env(emulator_server.endpoint).items():
        monkeypatch.setenv(key, value)
    create_resources(emulator_server, {})
    return emulator_server


@pytest.fixture
def aws_env(aws: Emulator) -> dict[str, Any]:
    """Environment for a child process that should talk to the emulator."""
    return {**os.environ, **client_env(aws.endpoint)}

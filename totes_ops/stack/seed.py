"""Filling a source database: the totesys schema, and its real rows or synthetic ones.

The real rows are read from ``../shared/totesys/data`` beside the repository (or ``--seed-dir``):
they are never copied into the project.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg2 import sql

from totes_cdc.errors import ConfigError

# Foreign-key order: each table after the tables it references.
LOAD_ORDER = ("address", "counterparty", "currency", "department", "design", "payment_type",
              "staff", "sales_order", "purchase_order", "transaction", "payment")
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_seed_dir() -> Path:
    """``$TOTES_CDC_SEED_DIR``, else ``shared/totesys`` beside the repository."""
    env = os.environ.get("TOTES_CDC_SEED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "totesys"


def real_data_available(seed_dir: Path | None = None) -> bool:
    data = (seed_dir or default_seed_dir()) / "data"
    return all((data / f"{table}.csv").is_file() for table in LOAD_ORDER)


def schema_sql() -> str:
    return resources.files("totes_ops.stack").joinpath("totesys_schema.sql").read_text("utf-8")


def create_schema(conn: Any) -> None:
    """Create the totesys tables and types (in one transaction)."""
    with conn.cursor() as cur:
        cur.execute(schema_sql())
    conn.commit()


def set_sequences(conn: Any) -> None:
    """Move every serial sequence past its table's largest id."""
    with conn.cursor() as cur:
        for table in LOAD_ORDER:
            cur.execute(sql.SQL(
                "SELECT setval(pg_get_serial_sequence(%s, %s), "
                "COALESCE((SELECT max({id}) FROM {table}), 0) + 1, false)").format(
                    id=sql.Identifier(f"{table}_id"), table=sql.Identifier("public", table)),
                (f"public.{table}", f"{table}_id"))
    conn.commit()


def load_totesys(conn: Any, seed_dir: Path | None = None) -> dict[str, int]:
    """COPY the real totesys rows into an empty schema; row counts per table."""
    data = (seed_dir or default_seed_dir()) / "data"
    for table in LOAD_ORDER:
        if not (data / f"{table}.csv").is_file():
            raise ConfigError(f"seed file missing: {data / f'{table}.csv'} (use --seed-dir to "
                              "point at a totesys folder, or --seed synthetic)")
    counts = {}
    with conn.cursor() as cur:
        for table in LOAD_ORDER:
            with (data / f"{table}.csv").open(encoding="utf-8") as f:
                header = f.readline().strip().split(",")
                cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
                    sql.Identifier("public", table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in header)).as_string(cur), f)
                counts[table] = cur.rowcount
    conn.commit()
    set_sequences(conn)
    return counts


def row_counts(conn: Any) -> dict[str, int]:
    with conn.cursor() as cur:
        counts = {}
        for table in LOAD_ORDER:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table)))
            counts[table] = cur.fetchone()[0]
    return counts

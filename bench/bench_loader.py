"""Loader benchmark: initial load of the real totesys snapshot, and per-file apply of small batches.

Reference, measured in the same run: a plain COPY of the same rows into unindexed tables (the
floor for moving those bytes into PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import io
import statistics
import time
from typing import Any

import psycopg2
import pyarrow.parquet as pq

from bench import local_server
from tests.integration.warehouse_loader.files import (
    event,
    object_key,
    parquet_bytes,
    snapshot_files,
    source_columns,
)
from totes_ops.stack import seed
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader.apply import (
    _STAGED_META,
    SourceTable,
    apply_file,
    source_table,
    stage_copy,
    table_of,
)
from warehouse_loader.migrate import migrate
from warehouse_loader.reconcile import reconcile

REPEATS = 3
SMALL_BATCHES = (1, 10, 100)
FILES_PER_SIZE = 20


def _initial_load(server: LocalPostgres, files: dict[str, bytes], n: int) -> tuple[float, str]:
    dsn = server.create_database(f"bench_load_{n}")
    conn = psycopg2.connect(dsn)
    migrate(conn)
    start = time.perf_counter()
    for key, data in files.items():
        apply_file(conn, key, data)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, dsn


def _plain_copy(server: LocalPostgres, files: dict[str, bytes], n: int) -> float:
    """COPY the same rows (the same staging) into unindexed tables: the reference."""
    conn = psycopg2.connect(server.create_database(f"bench_copy_{n}"))
    migrate(conn)
    with conn.cursor() as cur:
        specs: dict[str, SourceTable] = {}
        for key in files:
            spec = source_table(cur, table_of(key))
            assert spec is not None
            specs[key] = spec
            cur.execute(f"CREATE TABLE plain_{spec.name} ("  # nosec B608: the catalog's names
                        + ", ".join(f'"{name}" {typ}' for name, typ in (*_STAGED_META, *spec.columns))
                        + ")")
        conn.commit()
        start = time.perf_counter()
        for key, data in files.items():
            table = pq.read_table(io.BytesIO(data))
            copy_format, staged = stage_copy(table, specs[key])
            cur.copy_expert(f"COPY plain_{specs[key].name} FROM STDIN WITH (FORMAT {copy_format})",
                            io.BytesIO(staged))
        conn.commit()
        elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _small_batches(source: Any, warehouse_dsn: str) -> dict[int, list[float]]:
    """Apply files of 1/10/100 payment updates (paid flips) to the loaded warehouse."""
    columns = source_columns(source, "payment")
    names = [c.name for c in columns]
    with source.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f'"{n}"::text' for n in names)
                    + " FROM payment ORDER BY payment_id")
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn = psycopg2.connect(warehouse_dsn)
    timings: dict[int, list[float]] = {}
    lsn, row_index = 10**9, 0
    for size in SMALL_BATCHES:
        timings[size] = []
        for _ in range(FILES_PER_SIZE):
            lsn += 1
            batch = []
            for seq in range(1, size + 1):
                row = dict(rows[row_index % len(rows)])
                row_index += 1
                row["paid"] = "true" if row["paid"] == "false" else "false"
                batch.append(event("u", lsn, seq, row, commit_ts=dt.datetime.now(dt.UTC)))
            data = parquet_bytes(columns, batch)
            start = time.perf_counter()
            apply_file(conn, object_key("payment", lsn, lsn), data)
            timings[size].append(time.perf_counter() - start)
    conn.close()
    return timings


def run() -> str:
    today = dt.date.today().isoformat()
    if not seed.real_data_available():
        return f"## Warehouse loader ({today})\n\nSkipped: the real totesys data is not available.\n"
    with local_server() as server:
        source_dsn = server.create_database("bench_source")
        source = psycopg2.connect(source_dsn)
        seed.create_schema(source)
        counts = seed.load_totesys(source)
        files = snapshot_files(source, seed.LOAD_ORDER)
        loads, copies, dsn = [], [], ""
        for n in range(REPEATS):
            elapsed, dsn = _initial_load(server, files, n)
            loads.append(elapsed)
            copies.append(_plain_copy(server, files, n))
        start = time.perf_counter()
        matches = reconcile(source_dsn, dsn).ok
        reconcile_s = time.perf_counter() - start
        small = _small_batches(source, dsn)
        source.close()
    rows = sum(counts.values())
    load_s, copy_s = statistics.median(loads), statistics.median(copies)
    lines = [
        f"## Warehouse loader ({today})",
        "",
        f"Initial load of the real totesys snapshot: {rows:,} rows in 11 processed Parquet files "
        f"(one per table), applied with the loader's `apply_file` (one transaction per file: "
        f"mirror, facts, dim_date, dimensions) into a freshly migrated warehouse on a local "
        f"PostgreSQL server. Medians of {REPEATS} runs.",
        "",
        "| measurement | seconds | rows/s |",
        "|---|---:|---:|",
        f"| initial load, all 11 tables (loader) | {load_s:.2f} | {rows / load_s:,.0f} |",
        f"| reference: plain COPY of the same rows into unindexed tables | {copy_s:.2f} | "
        f"{rows / copy_s:,.0f} |",
        f"| `reconcile` of the loaded warehouse against the source ({'matches' if matches else 'DIFFERS'}) "
        f"| {reconcile_s:.2f} | |",
        "",
        f"Per-file apply of small batches (payment updates, `paid` flipped, into the loaded "
        f"warehouse; {FILES_PER_SIZE} files per size):",
        "",
        "| rows per file | median ms | p95 ms |",
        "|---:|---:|---:|",
    ]
    for size, timings in small.items():
        ms = sorted(t * 1000 for t in timings)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        lines.append(f"| {size} | {statistics.median(ms):.1f} | {p95:.1f} |")
    lines.append("")
    return "\n".join(lines) + "\n"

"""Bulk load benchmark: source -> warehouse current state for a large table read as snapshot files.

A ``sales_order`` table of ``ROWS`` rows (the totesys columns, synthetic values) is read in key
ranges of ``FILE_ROWS`` rows into processed Parquet files of snapshot reads (op ``r``, one position
per row, as capture's lake snapshot writes them), then applied by the loader's ``apply_file`` into a
freshly migrated warehouse (mirror, facts, current facts, dim_date; the mirror rows keep the
reads for the row history, migration 025) by as many loaders at
once as the snapshot queue's mapping runs in AWS (``snapshot_loader_mapping.maximum_concurrency``,
each with its own connection), and by one loader; then a completion marker sweeps the table.
Reference, in the same run: ``COPY (SELECT * FROM sales_order) TO STDOUT`` piped into
``COPY ... FROM STDIN`` of an unindexed table with the same columns in the warehouse. And the
three tables' copies: the rows the loader wrote, copied in binary into a fresh warehouse's mirror,
fact and current tables with their indexes, triggers off, as many at once as the loaders (the
writes any bulk path that keeps these three tables makes; not a lower bound: a ``COPY`` from the
client parses every row, where the loader inserts from the stage it copied once). Medians of ``REPEATS``
runs, alternating the four. Then the loader's peak RSS at two table sizes.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import queue
import statistics
import subprocess  # nosec B404: runs this interpreter on this module
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg2 import sql

from bench import local_server
from totes_cdc.contract import Column, arrow_type, parquet_schema, snapshot_seq
from totes_cdc.settings import settings
from totes_cdc.snapshot_marker import SnapshotMarker, marker_parquet
from totes_ops.stack.postgres import LocalPostgres
from warehouse_loader import apply
from warehouse_loader.apply import apply_file
from warehouse_loader.migrate import migrate

ROWS = int(os.environ.get("TOTES_CDC_BENCH_BULK_ROWS", "1000000"))
RSS_ROWS = tuple(int(n) for n in os.environ.get("TOTES_CDC_BENCH_BULK_RSS_ROWS",
                                                 "1000000,10000000").split(","))
FILE_ROWS = 100_000
REPEATS = 3
LOADERS = int(settings()["snapshot_loader_mapping"]["maximum_concurrency"])
SNAPSHOT_LSN = 10**9
COMMIT_TS = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
TABLE = "sales_order"

# The totesys sales_order columns (totes_ops/stack/totesys_schema.sql), without its foreign keys:
# the benchmark needs its shape, not the other tables.
SOURCE_DDL = """
CREATE TABLE public.sales_order (
    sales_order_id integer PRIMARY KEY,
    created_at timestamp(3) without time zone NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL,
    design_id integer NOT NULL,
    staff_id integer NOT NULL,
    counterparty_id integer NOT NULL,
    units_sold integer NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    currency_id integer NOT NULL,
    agreed_delivery_date character varying NOT NULL,
    agreed_payment_date character varying NOT NULL,
    agreed_delivery_location_id integer NOT NULL)
"""
FILL = """
INSERT INTO public.sales_order SELECT n,
    timestamp '2022-11-03 14:20:52.186' + n * interval '17 seconds',
    timestamp '2022-11-03 14:20:52.186' + n * interval '17 seconds' + (n %% 9) * interval '1 day',
    1 + n %% 50, 1 + n %% 20, 1 + n %% 20, 1000 + n %% 90000, (200 + n %% 800)::numeric / 100, 1 + n %% 3,
    (date '2022-11-05' + n %% 700)::text, (date '2022-11-06' + n %% 700)::text, 1 + n %% 30
FROM generate_series(1, %s) AS n
"""


def source_columns(conn: Any) -> tuple[Column, ...]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
            "COALESCE(a.attnum = ANY(i.indkey), false) FROM pg_attribute a "
            "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
            "WHERE a.attrelid = 'public.sales_order'::regclass AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum")
        return tuple(Column(name, typ, key) for name, typ, key in cur.fetchall())


def create_source(dsn: str, rows: int) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.sales_order")
        cur.execute(SOURCE_DDL)
        cur.execute(FILL, (rows,))
    conn.close()


def object_key(first: int, last: int) -> str:
    return (f"processed/public.{TABLE}/date={COMMIT_TS.date()}/"
            f"snapshot-{SNAPSHOT_LSN}-{TABLE}-{first}-{last}.parquet")


def snapshot_files(dsn: str, rows: int) -> Iterator[tuple[str, bytes]]:
    """The table's snapshot as processed files of ``FILE_ROWS`` reads each, read by key range with
    ``COPY ... TO STDOUT`` and typed by pyarrow's CSV reader: one file in memory at a time."""
    conn = psycopg2.connect(dsn)
    columns = source_columns(conn)
    schema = parquet_schema(columns)
    types = {c.name: arrow_type(c.type)[0] for c in columns}
    names = [c.name for c in columns]
    for first in range(1, rows + 1, FILE_ROWS):
        last = min(first + FILE_ROWS - 1, rows)
        buf = io.BytesIO()
        with conn.cursor() as cur:
            cur.copy_expert(f"COPY (SELECT * FROM public.{TABLE} WHERE sales_order_id "  # nosec B608
                            f"BETWEEN {first} AND {last} ORDER BY sales_order_id) TO STDOUT "
                            "WITH (FORMAT csv)", buf)
        conn.rollback()
        buf.seek(0)
        read = pa_csv.read_csv(buf, pa_csv.ReadOptions(column_names=names),
                               convert_options=pa_csv.ConvertOptions(column_types=types))
        n = read.num_rows
        meta = {"_op": pa.array(["r"] * n), "_lsn": pa.array([SNAPSHOT_LSN] * n, pa.int64()),
                "_seq": pa.array(range(snapshot_seq(first), snapshot_seq(first) + n), pa.int64()),
                "_xid": pa.nulls(n, pa.int64()),
                "_commit_ts": pa.array([COMMIT_TS] * n, pa.timestamp("us", tz="UTC")),
                "_snapshot": pa.array([True] * n), "_unchanged": pa.array([[]] * n, pa.list_(pa.string()))}
        table = pa.table([meta[f.name] if f.name in meta else read[f.name] for f in schema],
                         schema=schema)
        out = io.BytesIO()
        pq.write_table(table, out)
        yield object_key(first, last), out.getvalue()
    conn.close()


def marker(keys: list[str], rows: int, columns: tuple[Column, ...]) -> tuple[str, bytes]:
    key = f"processed/public.{TABLE}/date={COMMIT_TS.date()}/snapshot-{SNAPSHOT_LSN}-{TABLE}-done.parquet"
    return key, marker_parquet(SnapshotMarker("public", TABLE, SNAPSHOT_LSN, tuple(keys), rows, False),
                               columns)


def at_once(dsn: str, items: list[Any], loaders: int, work: Callable[[Any, Any], object]) -> None:
    """``work(connection, item)`` for every item, ``loaders`` threads at once, each with its own
    connection."""
    pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    failed: list[BaseException] = []

    def loader() -> None:
        own = psycopg2.connect(dsn)
        try:
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                work(own, item)
        except BaseException as exc:  # reported by the caller
            failed.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=loader) for _ in range(loaders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise failed[0]


def load(warehouse_dsn: str, files: list[tuple[str, bytes]], loaders: int) -> float:
    """Apply the files, ``loaders`` at a time, each loader with its own connection, then their
    marker (the last of ``files``); seconds."""
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    start = time.perf_counter()
    at_once(warehouse_dsn, files[:-1], loaders, lambda own, file: apply_file(own, *file))
    apply_file(conn, *files[-1], fetch=dict(files).__getitem__)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


# The three tables (schema, name) a snapshot file's rows are written into.
COPIED_TABLES = (("mirror", TABLE), ("public", f"fact_{TABLE}"), ("public", f"fact_{TABLE}_current"))
CopiedFile = list[tuple[sql.Composed, bytes]]


def three_table_files(loaded_dsn: str, rows: int) -> list[CopiedFile]:
    """For each snapshot file, the rows the loader wrote into each of the three tables (in the
    warehouse at ``loaded_dsn``), as a ``COPY ... FROM STDIN`` command and its binary data."""
    conn = psycopg2.connect(loaded_dsn)
    commands = []
    with conn.cursor() as cur:
        for schema, table in COPIED_TABLES:
            cur.execute("SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute "
                        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                        "AND attidentity = ''", (f"{schema}.{table}",))
            columns = sql.SQL(", ").join(map(sql.Identifier, cur.fetchone()[0]))
            commands.append((sql.SQL("COPY (SELECT {} FROM {} WHERE {} BETWEEN %s AND %s) TO STDOUT "
                                     "(FORMAT binary)").format(columns, sql.Identifier(schema, table),
                                                               sql.Identifier(f"{TABLE}_id")),
                             sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                                 sql.Identifier(schema, table), columns)))
    files = []
    for first in range(1, rows + 1, FILE_ROWS):
        file = []
        for copy_to, copy_from in commands:
            buf = io.BytesIO()
            with conn.cursor() as cur:
                cur.copy_expert(cur.mogrify(copy_to, (first, first + FILE_ROWS - 1)).decode(), buf)
            file.append((copy_from, buf.getvalue()))
        files.append(file)
    conn.close()
    return files


def three_table_load(warehouse_dsn: str, files: list[CopiedFile], loaders: int) -> float:
    """The three tables' copies: the rows the loader writes, copied into a freshly migrated warehouse's
    three tables with all their indexes, triggers off, ``loaders`` at once, one transaction per
    file; seconds. No derivation, no dashboard sums, no stage."""

    def copy_file(conn: Any, file: CopiedFile) -> None:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL session_replication_role = replica")  # no triggers
            for copy_from, data in file:
                cur.copy_expert(copy_from.as_string(cur), io.BytesIO(data))

    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    conn.close()
    start = time.perf_counter()
    at_once(warehouse_dsn, files, loaders, copy_file)
    elapsed = time.perf_counter() - start
    conn = psycopg2.connect(warehouse_dsn)
    with conn, conn.cursor() as cur:
        for schema, table in COPIED_TABLES:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            if cur.fetchone()[0] != ROWS:
                raise RuntimeError(f"the copies' {schema}.{table} does not hold {ROWS:,} rows")
    conn.close()
    return elapsed


def one_file(server: LocalPostgres, key: str, data: bytes) -> tuple[list[float], list[float]]:
    """Seconds to apply one file of reads into a fresh warehouse in bulk, and through the
    row-by-row path (the same code with the bulk path switched off), alternated, ``REPEATS`` times."""
    bulk: list[float] = []
    row_by_row: list[float] = []
    for n in range(REPEATS):
        for timings, enabled in ((bulk, True), (row_by_row, False)):
            conn = psycopg2.connect(server.create_database(f"bulk_one_{n}_{int(enabled)}"))
            migrate(conn)
            with mock.patch.object(apply, "is_snapshot_file",
                                   apply.is_snapshot_file if enabled else lambda table, spec: False):
                start = time.perf_counter()
                apply_file(conn, key, data)
                timings.append(time.perf_counter() - start)
            conn.close()
    return bulk, row_by_row


def copy_reference(source_dsn: str, warehouse_dsn: str) -> float:
    """COPY TO from the source piped into COPY FROM an unindexed table of the warehouse; seconds."""
    src, wh = psycopg2.connect(source_dsn), psycopg2.connect(warehouse_dsn)
    with wh, wh.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.plain_sales_order")
        cur.execute(SOURCE_DDL.replace("public.sales_order", "public.plain_sales_order")
                    .replace(" PRIMARY KEY", ""))
    read, write = os.pipe()
    start = time.perf_counter()

    def produce() -> None:
        with os.fdopen(write, "wb") as out, src.cursor() as cur:
            cur.copy_expert(f"COPY public.{TABLE} TO STDOUT", out)  # nosec B608

    producer = threading.Thread(target=produce)
    producer.start()
    with os.fdopen(read, "rb") as pipe, wh.cursor() as cur:
        cur.copy_expert("COPY public.plain_sales_order FROM STDIN", pipe)
    wh.commit()
    producer.join()
    elapsed = time.perf_counter() - start
    src.close()
    wh.close()
    return elapsed


def rss_child(source_dsn: str, warehouse_dsn: str, rows: int) -> None:
    """The loader alone, in this process: files read one at a time, applied, forgotten."""
    conn = psycopg2.connect(warehouse_dsn)
    migrate(conn)
    keys = []
    for key, data in snapshot_files(source_dsn, rows):
        apply_file(conn, key, data)
        keys.append(key)
    src = psycopg2.connect(source_dsn)
    key, data = marker(keys, rows, source_columns(src))
    src.close()
    apply_file(conn, key, data)
    conn.close()


def peak_rss(source_dsn: str, warehouse_dsn: str, rows: int) -> float:
    """Peak RSS (MiB) of a process that reads the snapshot files one at a time and applies them."""
    # VmHWM, not getrusage's ru_maxrss: the child's ru_maxrss starts from the peak of this
    # process, whose memory it was spawned from, and this process holds every file of the run.
    code = ("import os, sys; from bench import peak_rss_mib; from bench.bench_bulk_load import "
            "rss_child; rss_child(os.environ['TOTES_CDC_SOURCE_DSN'], "
            "os.environ['TOTES_CDC_WAREHOUSE_DSN'], int(sys.argv[1])); "
            "print(peak_rss_mib(os.getpid()))")
    # The DSNs (with their passwords) through the environment, not the process list.
    env = {**os.environ, "TOTES_CDC_SOURCE_DSN": source_dsn, "TOTES_CDC_WAREHOUSE_DSN": warehouse_dsn}
    out = subprocess.run([sys.executable, "-c", code, str(rows)], env=env,  # nosec B603
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def run() -> str:
    today = dt.date.today().isoformat()
    with local_server() as server:
        source_dsn = server.create_database("bulk_source")
        create_source(source_dsn, ROWS)
        files = list(snapshot_files(source_dsn, ROWS))
        conn = psycopg2.connect(source_dsn)
        files.append(marker([k for k, _ in files], ROWS, source_columns(conn)))
        conn.close()
        one_bulk, one_rows = one_file(server, *files[0])
        loads: dict[int, list[float]] = {LOADERS: [], 1: []}
        copies, three_tables = [], []
        copied: list[CopiedFile] = []
        for n in range(REPEATS):
            copies.append(copy_reference(source_dsn, server.create_database(f"bulk_copy_{n}")))
            for loaders, timings in loads.items():
                loaded_dsn = server.create_database(f"bulk_load_{n}_{loaders}")
                timings.append(load(loaded_dsn, files, loaders))
                copied = copied or three_table_files(loaded_dsn, ROWS)
            three_tables.append(three_table_load(server.create_database(f"bulk_copies_{n}"), copied, LOADERS))
        rss = {}
        for rows in RSS_ROWS:
            create_source(source_dsn, rows)
            rss[rows] = peak_rss(source_dsn, server.create_database(f"bulk_rss_{rows}"), rows)
        load_avg = os.getloadavg()[0]
    load_s = {loaders: statistics.median(timings) for loaders, timings in loads.items()}
    copy_s = statistics.median(copies)
    three_tables_s = statistics.median(three_tables)
    lines = [
        f"## Bulk load of snapshot files ({today})",
        "",
        f"Source -> warehouse current state for a {ROWS:,}-row `sales_order` table: its snapshot "  # nosec B608
        f"as {len(files) - 1} processed files of up to {FILE_ROWS:,} reads plus the completion "
        f"marker, applied by `apply_file` into a freshly migrated warehouse (mirror, whose rows "
        f"keep the reads for the row history, fact_sales_order and its current table, dim_date, "
        f"the marker's ghost sweep): {LOADERS} loaders at once, each with its own connection, as "
        f"the snapshot queue's mapping runs them in AWS "
        f"(`snapshot_loader_mapping.maximum_concurrency`), and one loader alone. Reference in "
        f"the same run: `COPY (SELECT ...) TO STDOUT` of the source table piped into "
        f"`COPY FROM STDIN` of an unindexed table with the same columns. "
        f"Medians of {REPEATS} runs; load average {load_avg:.1f} at the end.",
        "",
        "| measurement | seconds | rows/s | ratio to reference |",
        "|---|---:|---:|---:|",
        *(f"| {'one loader' if loaders == 1 else f'{loaders} loaders at once'}: snapshot files "
          f"+ marker -> current state | "
          f"{seconds:.2f} | {ROWS / seconds:,.0f} | {copy_s / seconds:.3f} |"
          for loaders, seconds in load_s.items()),
        f"| the three tables' copies: the rows the loader writes, `COPY FROM` (binary) into the "
        f"three tables with their indexes, triggers off, {LOADERS} at once | {three_tables_s:.2f} | "
        f"{ROWS / three_tables_s:,.0f} | {copy_s / three_tables_s:.3f} |",
        f"| reference: COPY TO + COPY FROM, unindexed | {copy_s:.2f} | {ROWS / copy_s:,.0f} | 1.00 |",
        "",
        f"{LOADERS} loaders at once take {load_s[LOADERS] / three_tables_s:.2f} times as long as the three "
        f"tables' copies: the same rows in mirror, fact_{TABLE} and fact_{TABLE}_current "
        f"(prepared in advance, one transaction per file), without the stage, the derivation of "
        f"the facts and dimensions, the dashboard's sums or the marker.",
        "",
        f"One file of {FILE_ROWS:,} reads into a fresh warehouse, before and after the bulk path "
        f"(the row-by-row path is the same code with it switched off), alternated, medians of "
        f"{REPEATS}: bulk {statistics.median(one_bulk):.2f} s, row by row "
        f"{statistics.median(one_rows):.2f} s (ratio "
        f"{statistics.median(one_rows) / statistics.median(one_bulk):.2f}).",
        "",
        "Peak RSS of a process that reads the snapshot files one at a time and applies them "
        "(the loader's memory, Parquet reading included):",
        "",
        "| table rows | peak RSS MiB |",
        "|---:|---:|",
        *(f"| {rows:,} | {mib:.0f} |" for rows, mib in rss.items()),
        "",
    ]
    return "\n".join(lines) + "\n"

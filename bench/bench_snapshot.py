"""Initial snapshot rate: capture's consistent snapshot of a large sales_order straight to the lake.

A fresh database on a logical-replication server gets the totesys schema, one row in each
reference table and N sales_order rows from generate_series, for N in ``BENCH_SNAPSHOT_ROWS``
(comma-separated; default 1,000,000 and 10,000,000). Per run, capture (``python -m capture
capture``, its own OS process, as deployed, default settings: 4 workers, 100,000-row files) with a
new slot takes the initial snapshot into the raw and processed buckets of the emulator; the
snapshot counts from capture's "created slot" log line (process start-up excluded) to its "initial
snapshot complete" line, written once every file and marker is in S3. Its peak RSS is sampled
while it runs, and the CPU it and the whole machine spend is counted. Reference, same run:
``COPY (SELECT * FROM sales_order) TO STDOUT`` of the same table, read by psycopg2 and discarded
(the floor for reading those rows out of PostgreSQL).
Then one 100,000-row file's steps, timed in this process: where the snapshot's time goes.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import statistics
import subprocess  # nosec B404: our own CLI with fixed arguments
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import pyarrow as pa

from bench import machine_cpu_seconds, peak_rss_mib, process_cpu_seconds, source_and_emulator
from capture import source
from capture.copytext import text_columns
from totes_cdc.contract import SEQ_RANGE, Column
from totes_cdc.lakefiles import LakeLocation, parquet_bytes
from totes_cdc.snapshot_files import processed_table, raw_container, record_bodies
from totes_ops.stack import seed
from totes_ops.stack.emulator import Emulator, client_env
from totes_ops.stack.postgres import LocalPostgres

SIZES = [int(n) for n in os.environ.get("BENCH_SNAPSHOT_ROWS", "1000000,10000000").split(",")]
RUNS = {1_000_000: 3}  # runs per size; larger sizes run once (minutes each)
PROFILE_ROWS = 100_000
CORES = os.cpu_count() or 1  # the machine's CPUs, all of which /proc/stat (the machine column) counts
REFERENCE_ROWS = """
INSERT INTO address (address_id, address_line_1, city, postal_code, country, phone, last_updated)
    VALUES (1, '1 High Street', 'Leeds', 'LS1 1AA', 'United Kingdom', '0113 000000', now());
INSERT INTO counterparty (counterparty_id, counterparty_legal_name, legal_address_id, last_updated)
    VALUES (1, 'Bench Ltd', 1, now());
INSERT INTO currency (currency_id, currency_code, last_updated) VALUES (1, 'GBP', now());
INSERT INTO department (department_id, department_name, last_updated) VALUES (1, 'Sales', now());
INSERT INTO design (design_id, design_name, file_location, file_name, last_updated)
    VALUES (1, 'Steel', '/usr', 'steel.json', now());
INSERT INTO staff (staff_id, first_name, last_name, department_id, email_address, last_updated)
    VALUES (1, 'Ada', 'Lovelace', 1, 'ada@example.com', now());
"""
SALES_ORDERS = """
INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold,
                         unit_price, currency_id, agreed_delivery_date, agreed_payment_date,
                         agreed_delivery_location_id)
SELECT t, t, 1, 1, 1, 1 + g %% 100000, 2.00 + (g %% 300), 1,
       (t + interval '10 days')::date::text, (t + interval '20 days')::date::text, 1
FROM generate_series(1, %(rows)s) g,
     LATERAL (SELECT timestamp '2022-11-03 14:20:49.962' + g * interval '1 second' AS t) s
"""


def _source(server: LocalPostgres, rows: int) -> str:
    dsn = server.create_database(f"bench_snapshot_{rows}")
    conn = psycopg2.connect(dsn)
    seed.create_schema(conn)
    with conn.cursor() as cur:
        cur.execute(REFERENCE_ROWS)
        cur.execute(SALES_ORDERS, {"rows": rows})
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()
    return dsn


def _copy_out(dsn: str) -> float:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            sink = _Discard()
            start = time.perf_counter()
            cur.copy_expert("COPY (SELECT * FROM public.sales_order) TO STDOUT", sink)
            return time.perf_counter() - start
    finally:
        conn.close()


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def _empty_lake(emulator: Emulator, lake: LakeLocation) -> None:
    """Remove what a run wrote (the emulator keeps objects in memory)."""
    s3 = emulator.client("s3")
    for bucket in (lake.raw_bucket, lake.processed_bucket):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


@dataclass
class _Snapshot:
    seconds: float
    peak_mib: float
    cpu: dict[str, float]  # seconds on a CPU during the snapshot: capture, the emulator, the machine


def _capture(dsn: str, emulator: Emulator, run: str, state_root: Path) -> _Snapshot:
    """One snapshot by a capture process of its own, timed and its CPU counted."""
    slot = f"bench_snapshot_{run}"
    assert emulator.process is not None
    emulator_pid = emulator.process.pid
    env = {**os.environ, **client_env(emulator.endpoint), "TOTES_CDC_SOURCE_DSN": dsn}
    process = subprocess.Popen(  # nosec B603
        [sys.executable, "-m", "capture", "capture", "--tables", "sales_order", "--slot", slot,
         "--publication", slot, "--state-dir", str(state_root / slot)],
        env=env, stderr=subprocess.PIPE, text=True)
    marks: dict[str, tuple[float, dict[str, float]]] = {}
    lines: list[str] = []
    done = threading.Event()

    def mark(name: str) -> None:
        marks[name] = (time.monotonic(), {"capture": process_cpu_seconds(process.pid),
                                          "emulator": process_cpu_seconds(emulator_pid),
                                          "machine": machine_cpu_seconds()[0]})

    def watch() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "created slot" in line:
                mark("start")
            if "initial snapshot complete" in line:
                mark("end")
                done.set()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    peak = 0.0
    try:
        while not done.wait(0.2):
            peak = max(peak, peak_rss_mib(process.pid))
        peak = max(peak, peak_rss_mib(process.pid))
        if "end" not in marks:
            raise RuntimeError("capture ended before its snapshot: " + "".join(lines[-5:]))
    finally:
        process.terminate()
        process.wait(timeout=60)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        cur.execute(f'DROP PUBLICATION "{slot}"')  # nosec B608: our own constant name
    conn.close()
    (began, before), (ended, after) = marks["start"], marks["end"]
    return _Snapshot(ended - began, peak, {k: after[k] - before[k] for k in after})


def _profile(dsn: str) -> list[tuple[str, float]]:
    """Seconds of each step of one PROFILE_ROWS-row file, in this process (best of 3)."""
    conn = psycopg2.connect(dsn, options=source.SESSION_OPTIONS)
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        taken_at = cur.fetchone()[0]
        described, key = source.table_columns(cur, "public.sales_order")
    columns = tuple(Column(n, t, n in (key or [])) for n, t, _ in described)
    names = [c.name for c in columns]
    copy = f"COPY (SELECT * FROM public.sales_order WHERE sales_order_id <= {PROFILE_ROWS}) TO STDOUT"  # nosec B608
    best: dict[str, float] = {}

    def timed(step: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = work()
        best[step] = min(best.get(step, float("inf")), time.perf_counter() - start)
        return out

    seqs = np.arange(1, PROFILE_ROWS + 1, dtype=np.int64) - SEQ_RANGE
    for _ in range(3):
        buf = io.BytesIO()

        def read(buf: io.BytesIO = buf) -> None:
            with conn.cursor() as cur:
                cur.copy_expert(copy, buf)

        timed("COPY ... TO STDOUT (text format) into memory", read)
        values = timed("text -> string columns (compiled split)",
                       lambda: text_columns(pa.py_buffer(buf.getbuffer()), names))  # noqa: B023
        bodies = timed("Avro record sizes (compiled)", lambda: record_bodies(
            "public", "sales_order", columns, lsn=1, seqs=seqs, taken_at=taken_at, values=values))  # noqa: B023
        timed("Avro container (bodies written by compiled loops, deflate 1)",
              lambda: raw_container(bodies, "k"))  # noqa: B023
        table = timed("typed processed columns", lambda: processed_table(
            columns, lsn=1, seqs=seqs, taken_at=taken_at, values=values))  # noqa: B023
        timed("Parquet file", lambda: parquet_bytes(table))  # noqa: B023
    conn.close()
    return list(best.items())


def run() -> str:
    load = [os.getloadavg()[0]]
    lake = LakeLocation.from_settings()
    rows_out: list[str] = []
    figures: dict[int, tuple[float, float, float]] = {}
    with source_and_emulator() as (base, server, emulator):
        s3 = emulator.client("s3")
        for bucket in (lake.raw_bucket, lake.processed_bucket):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
                "LocationConstraint": s3.meta.region_name})
        profile: list[tuple[str, float]] = []
        with tempfile.TemporaryDirectory(dir=base) as state_root:
            for size in SIZES:
                dsn = _source(server, size)
                if not profile:
                    profile = _profile(dsn)
                copies, snapshots = [], []
                for n in range(RUNS.get(size, 1)):
                    copies.append(_copy_out(dsn))
                    snapshots.append(_capture(dsn, emulator, f"{size}_{n}", Path(state_root)))
                    _empty_lake(emulator, lake)
                    load.append(os.getloadavg()[0])
                    print(f"   {size:,} rows, run {n + 1}: COPY {copies[-1]:.1f} s, capture snapshot "
                          f"{snapshots[-1].seconds:.1f} s, peak RSS {snapshots[-1].peak_mib:.0f} MiB",
                          flush=True)
                copy_s = statistics.median(copies)
                snap_s = statistics.median(snap.seconds for snap in snapshots)
                peak = max(snap.peak_mib for snap in snapshots)
                figures[size] = (copy_s, snap_s, peak)
                rows_out.append(f"| {size:,} | {len(copies)} | {snap_s:.1f} | {size / snap_s:,.0f} | "
                                f"{copy_s:.1f} | {size / copy_s:,.0f} | {copy_s / snap_s:.2f} | "
                                f"{peak:.0f} MiB | "
                                + "".join(f"{statistics.median(snap.cpu[k] for snap in snapshots):.1f} | "
                                          for k in ("capture", "emulator", "machine"))
                                + f"{CORES * 2 * copy_s:.1f} |")
                conn = psycopg2.connect(server.dsn("postgres"))
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE bench_snapshot_{size}")  # nosec B608: an int
                conn.close()
    peaks_text = ""
    if len(figures) > 1:
        low, high = min(figures), max(figures)
        peaks_text = (f" Peak RSS at {high:,} rows / at {low:,} rows: "
                      f"{figures[high][2] / figures[low][2]:.2f}.")
    steps = "\n".join(f"| {step} | {seconds * 1000:.0f} |" for step, seconds in profile)
    return (f"## Initial snapshot (as of {dt.date.today().isoformat()})\n\n"
            "Capture's consistent initial snapshot of a sales_order (totesys schema, one row per "
            "reference table) straight to the lake's raw and processed buckets on the emulator, "
            "from slot creation to the last file and marker in S3, default settings (4 workers, "
            "100,000-row files); capture is its own OS process. Reference: "
            "`COPY (SELECT * FROM sales_order) TO STDOUT` of the same table in the same run. "
            f"Medians; load average (1 min) {', '.join(f'{x:.1f}' for x in load)}.\n\n"
            "| rows | runs | capture snapshot s | rows/s | COPY s | COPY rows/s | ratio capture / COPY "
            "| capture peak RSS | CPU s: capture | emulator | machine | machine at 0.5 × COPY |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            + "\n".join(rows_out) + f"\n\n{peaks_text.strip()}\n\n"
            "CPU: the seconds on a CPU, from the slot's creation to the snapshot's end, of the capture "
            "process, of the emulator (its S3 puts, on the same cores here; in AWS, S3 is elsewhere) and "
            "of the whole machine (those two, the source's COPY and everything else); the last column "
            f"is what the machine's {CORES} cores give in the time 0.5 × COPY allows ({CORES} cores × 2 × "
            "COPY s). A snapshot "
            "that needs more CPU than that cannot reach 0.5 × COPY on this machine, however its work "
            "is spread.\n\n"
            f"Where one {PROFILE_ROWS:,}-row file's time goes (one core, this process, best of 3):\n\n"
            "| step | ms |\n|---|---:|\n" + steps + "\n")

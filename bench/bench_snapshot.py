"""Initial snapshot rate: capture's consistent snapshot of a large sales_order into Kinesis.

A fresh database on a logical-replication server gets the totesys schema, one row in each
reference table and ROWS sales_order rows from generate_series. Per run, a fresh 2-shard stream on
the emulator and ``totes-cdc capture`` (its own OS process, as deployed) with a new slot; the
snapshot counts from capture's "created slot" log line (process start-up excluded) to its
"initial snapshot complete" line, which it writes only after Kinesis accepted every snapshot event.
Reference, same run: ``COPY (SELECT * FROM sales_order) TO STDOUT`` of the same table, read by
psycopg2 and discarded (the floor for reading those rows out of PostgreSQL).
``BENCH_SNAPSHOT_ROWS`` sets the size.
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
from pathlib import Path

import psycopg2

from bench import peak_rss_mib, source_and_emulator
from totes_ops.stack import seed
from totes_ops.stack.emulator import Emulator, client_env
from totes_ops.stack.postgres import LocalPostgres

ROWS = int(os.environ.get("BENCH_SNAPSHOT_ROWS", "1000000"))
RUNS = 3
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


def _source(server: LocalPostgres) -> str:
    dsn = server.create_database("bench_snapshot")
    conn = psycopg2.connect(dsn)
    seed.create_schema(conn)
    with conn.cursor() as cur:
        cur.execute(REFERENCE_ROWS)
        cur.execute(SALES_ORDERS, {"rows": ROWS})
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


def _capture(dsn: str, emulator: Emulator, run: int, state_root: Path) -> tuple[float, float]:
    """(seconds of the snapshot, peak RSS MiB of the capture process)."""
    stream, slot = f"bench-snapshot-{run}", f"bench_snapshot_{run}"
    kinesis = emulator.client("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream)
    env = {**os.environ, **client_env(emulator.endpoint), "TOTES_CDC_SOURCE_DSN": dsn}
    process = subprocess.Popen(  # nosec B603
        [sys.executable, "-m", "totes_ops", "capture", "--stream", stream, "--slot", slot,
         "--publication", slot, "--state-dir", str(state_root / slot)],
        env=env, stderr=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}
    lines: list[str] = []
    done = threading.Event()

    def watch() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "created slot" in line:
                marks["start"] = time.monotonic()
            if "initial snapshot complete" in line:
                marks["end"] = time.monotonic()
                done.set()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    peak = 0.0
    try:
        while not done.wait(0.5):
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
    kinesis.delete_stream(StreamName=stream)
    return marks["end"] - marks["start"], peak


def run() -> str:
    load = [os.getloadavg()[0]]
    with source_and_emulator() as (base, server, emulator):
        dsn = _source(server)
        copies, snapshots, peaks = [], [], []
        with tempfile.TemporaryDirectory(dir=base) as state_root:
            for n in range(RUNS):
                copies.append(_copy_out(dsn))
                seconds, peak = _capture(dsn, emulator, n, Path(state_root))
                snapshots.append(seconds)
                peaks.append(peak)
                load.append(os.getloadavg()[0])
                print(f"   run {n + 1}: COPY {copies[-1]:.1f} s, capture snapshot {seconds:.1f} s, "
                      f"peak RSS {peak:.0f} MiB", flush=True)
    copy_s, snap_s = statistics.median(copies), statistics.median(snapshots)
    return (f"## Initial snapshot (as of {dt.date.today().isoformat()})\n\n"
            f"Capture's consistent initial snapshot of a {ROWS:,}-row sales_order (totesys schema, "
            "one row per reference table) into a fresh 2-shard Kinesis stream on the emulator, "
            "from slot creation to the last snapshot event accepted by Kinesis; capture is its own "
            "OS process. Reference: `COPY (SELECT * FROM sales_order) TO STDOUT` of the same table "
            f"in the same run. Medians of {RUNS} runs; load average (1 min) "
            f"{', '.join(f'{x:.1f}' for x in load)}.\n\n"
            "| measurement | seconds | rows/s |\n|---|---:|---:|\n"
            f"| capture snapshot into Kinesis | {snap_s:.1f} | {ROWS / snap_s:,.0f} |\n"
            f"| reference: COPY ... TO STDOUT | {copy_s:.1f} | {ROWS / copy_s:,.0f} |\n\n"
            f"Ratio capture / COPY: {copy_s / snap_s:.2f} (capture reaches "
            f"{100 * copy_s / snap_s:.0f}% of the rate of reading the rows out with COPY). "
            f"Peak RSS of the capture process: {max(peaks):.0f} MiB.\n")

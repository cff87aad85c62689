"""Capture throughput against pg_recvlogical (the physical limit of reading a slot), same backlog.

For each workload a fresh database gets a table, a publication and two slots at the same point; the
workload is written, then each reader drains the backlog: pg_recvlogical into /dev/null (to the
end LSN), and the capture process (its own OS process, as deployed) into a fresh emulator stream
(until its slot confirms the end LSN, i.e. Kinesis has accepted every event). Capture's time is
counted from its first streaming log line, so process start-up is not included. Peak RSS is the
capture process's VmHWM. Sizes can be lowered with BENCH_CAPTURE_SCALE (e.g. 0.1).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import uuid
from pathlib import Path

import psycopg2

from bench import peak_rss_mib, source_and_emulator
from totes_cdc import contract, kpl
from totes_ops.stack.emulator import client_env, create_resources

SCALE = float(os.environ.get("BENCH_CAPTURE_SCALE", "1"))
RUNS = 3
TABLE = "CREATE TABLE bench (id bigserial PRIMARY KEY, name text, amount numeric(10,2), at timestamp(3))"
ROW = "'name ' || g, g * 1.5, now()"


def _sql(dsn, *statements):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for s in statements:
            cur.execute(s)
        result = cur.fetchall() if cur.description else None
    conn.close()
    return result


def _workload(dsn, kind, n):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        if kind == "single":
            for _ in range(n):
                cur.execute(f"INSERT INTO bench (name, amount, at) SELECT {ROW} FROM generate_series(1, 1) g")
        elif kind == "thousand":
            for _ in range(n // 1000):
                cur.execute(f"INSERT INTO bench (name, amount, at) "
                            f"SELECT {ROW} FROM generate_series(1, 1000) g")
        else:
            cur.execute(f"INSERT INTO bench (name, amount, at) SELECT {ROW} FROM generate_series(1, {n}) g")
        cur.execute("SELECT pg_current_wal_lsn()::text")
        end = cur.fetchone()[0]
        # Something past the end, so both readers see WAL beyond it and stop there.
        cur.execute("SELECT pg_logical_emit_message(false, 'bench_end', '')")
    conn.close()
    return end


def _confirmed(cur, slot, end):
    cur.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (end, slot))
    row = cur.fetchone()
    return bool(row and row[0])


def one_run(server, emulator, kind, n, state_root):
    db = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = server.create_database(db)
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    emulator.client("kinesis").create_stream(StreamName=stream, ShardCount=2)
    emulator.client("kinesis").get_waiter("stream_exists").wait(StreamName=stream)
    _sql(dsn, TABLE, "CREATE PUBLICATION totes_cdc FOR TABLE bench",
         f"SELECT pg_create_logical_replication_slot('{db}_recv', 'pgoutput')")
    state_dir = Path(tempfile.mkdtemp(dir=state_root))
    env = {**os.environ, **client_env(emulator.endpoint), "TOTES_CDC_SOURCE_DSN": dsn}
    command = [sys.executable, "-m", "totes_ops", "capture", "--tables", "bench", "--slot", f"{db}_cap",
               "--stream", stream, "--state-dir", str(state_dir), "--heartbeat-seconds", "5"]
    # First start: creates the capture slot and takes the (empty) snapshot; then stop it.
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:
            if "streaming slot" in line:
                break
    finally:
        first.terminate()
        first.communicate(timeout=60)
    end = _workload(dsn, kind, n)

    started = time.monotonic()
    subprocess.run([str(server.bindir / "pg_recvlogical"), "-d", dsn, "--slot", f"{db}_recv", "--start",
                    "-o", "proto_version=1", "-o", "publication_names=totes_cdc", "-E", end,
                    "-f", "/dev/null"],
                   check=True, env={**os.environ, "PGPASSWORD": server.password}, timeout=600)
    recv_seconds = time.monotonic() - started

    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    streaming = threading.Event()
    stream_started = [0.0]

    lines = []

    def watch():
        for line in process.stderr:
            lines.append(line)
            if "streaming slot" in line and not streaming.is_set():
                stream_started[0] = time.monotonic()
                streaming.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        if not streaming.wait(120):
            raise RuntimeError("capture did not start streaming: " + "".join(lines[-5:]))
        deadline = time.monotonic() + 1800
        # One connection for the polling: a new one every 20 ms would take CPU from the readers.
        poll = psycopg2.connect(dsn)
        poll.autocommit = True
        try:
            with poll.cursor() as cur:
                while not _confirmed(cur, f"{db}_cap", end):
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("capture stopped before catching up: " + "".join(lines[-5:]))
                    time.sleep(0.02)
        finally:
            poll.close()
        capture_seconds = time.monotonic() - stream_started[0]
        rss_mib = peak_rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    _sql(dsn, f"SELECT pg_drop_replication_slot('{db}_recv')", f"SELECT pg_drop_replication_slot('{db}_cap')")
    emulator.client("kinesis").delete_stream(StreamName=stream)
    return recv_seconds, capture_seconds, rss_mib


# What the profile showed and what was changed; the figures of the table above are from this run.
PROFILE = """\
**Profile and optimisation.** The first recorded run of this benchmark (2026-11-27, a busy machine)
gave capture 11,955 rows/s on single-row transactions against pg_recvlogical's 53,523 (ratio
0.22), 0.07 on 1,000-row transactions, 0.18 on one big transaction. The profile of capture's main
thread put fastavro's schemaless writer inside `contract.encode` first (≈23 µs per event), then
`kpl.aggregate`, then pgoutput decoding and event building. Changes: `contract.encode` is a
hand-written encoder for the one contract schema (column arrays encoded once per table shape,
column names once, varints from lookup tables), byte-identical to fastavro's writer (property test
`tests/unit/test_contract_encoding.py`; decoding stays on fastavro); `kpl.aggregate` takes tags and
small varints from tables and joins its pieces once (byte-identical to the plain encoding,
`tests/unit/test_kpl.py`); this benchmark polls the slot on one connection instead of opening a
new one every 20 ms (which took CPU from both readers). Main-thread CPU per single-row
transaction (pgoutput decode, events, encode, aggregation, fake sink, best of 5): 35.5 µs before,
17.3 µs after; `contract.encode` ≈16 µs → ≈3.6 µs, `kpl.aggregate` ≈3.7 µs → ≈1.1 µs per event.
Before and after side by side (same server, emulator and benchmark code, runs interleaved,
medians, 2026-11-27 23:00, quiet machine): single-row transactions 22,656 → 26,991 rows/s, ratio
0.49 → 0.66 (3 runs each); 1,000-row transactions (100,000 rows) 19,394 → 39,276 rows/s, ratio
0.16 → 0.35 (2 runs each). Rates on this shared 2-core machine vary up to 2× with the other load:
capture competes with the walsender, the emulator and everything else for the cores."""


def _per_event_micros() -> tuple[float, float]:
    """µs per event of contract.encode and kpl.aggregate for one bench-table insert (best of 5)."""
    columns = (contract.Column("id", "bigint", True), contract.Column("name", "text"),
               contract.Column("amount", "numeric(10,2)"),
               contract.Column("at", "timestamp(3) without time zone"))
    event = contract.ChangeEvent("c", "public", "bench", 0x3A1F2C08, 1, dt.datetime.now(dt.UTC), columns,
                                 after={"id": "123456", "name": "name 123456", "amount": "185184.00",
                                        "at": "2026-11-27 10:11:12.345"}, xid=123456)
    records = [(f"public.bench/{i}", contract.encode(event)) for i in range(2000)]
    encode = min(timeit.repeat(lambda: contract.encode(event), number=20_000, repeat=5)) / 20_000
    aggregate = min(timeit.repeat(lambda: kpl.aggregate(records), number=10, repeat=5)) / 10 / len(records)
    return encode * 1e6, aggregate * 1e6


def run() -> str:
    workloads = [("single-row transactions", "single", int(50_000 * SCALE), RUNS),
                 ("1,000-row transactions", "thousand", int(200_000 * SCALE), RUNS),
                 ("one big transaction", "big", int(1_000_000 * SCALE), 1)]
    rows = []
    with source_and_emulator() as (base, server, emulator):
        create_resources(emulator, {})  # the buckets: capture writes its snapshot to the lake
        for label, kind, n, runs in workloads:
            results = [one_run(server, emulator, kind, n, base) for _ in range(runs)]
            recv = statistics.median(r[0] for r in results)
            cap = statistics.median(r[1] for r in results)
            rss = max(r[2] for r in results)
            rows.append(f"| {label} | {n:,} | {n / recv:,.0f} | {n / cap:,.0f} | {recv / cap:.2f} | "
                        f"{rss:.0f} MB | {runs} |")
            print(rows[-1], flush=True)
    encode_us, aggregate_us = _per_event_micros()
    return ("## Capture: pgoutput slot → Kinesis (emulator)\n\n"
            f"Run {time.strftime('%Y-%m-%d')}. Rows/s draining the same backlog (medians of the runs); "
            "ratio = capture rate / pg_recvlogical rate; capture is a separate process writing KPL-"
            "aggregated records to a fresh 2-shard stream and counts as done when its slot confirms "
            "the end LSN.\n\n"
            "| workload | rows | pg_recvlogical rows/s | capture rows/s | ratio | capture peak RSS | runs |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
            f"Per event in this run (one core, best of 5): `contract.encode` {encode_us:.1f} µs, "
            f"`kpl.aggregate` {aggregate_us:.1f} µs.\n\n" + PROFILE + "\n")

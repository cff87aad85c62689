"""Stream processor throughput: events/s through the Lambda handler, against the emulator's S3.

Each batch is N sales_order change events, KPL-aggregated 100 per Kinesis record as capture
publishes them, delivered as the Lambda Kinesis event. Measured per batch size (median of 5 runs,
each a new batch so every object is really written):
- handler: the whole handler (de-aggregate -> decode -> type -> Avro -> Parquet -> S3 puts);
- no S3: the same parse and file building without the puts (where the time goes);
- reference: bare ``contract.decode`` of the same events, the floor any consumer pays.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import statistics
import time

from stream_processors import handler as handler_module
from stream_processors.files import avro_file, parquet_file, partitions
from stream_processors.records import parse_record
from tests.events import Context, aggregated, lambda_event, sales_orders
from totes_cdc import contract, kpl
from totes_cdc.stack.emulator import Emulator, apply_client_env, create_resources

SIZES = (100, 1_000, 10_000)
RUNS = 5
PER_RECORD = 100


def _median_rate(events: int, runs: list[float]) -> float:
    return events / statistics.median(runs)


def _build_files(records: list[tuple[str, bytes]]) -> None:
    parsed = [parse_record(data, key, str(i)) for i, (key, data) in enumerate(records)]
    for partition, events in partitions(e for p in parsed for e in p.events).items():
        avro_file([e.record for e in events], partition.table)
        parquet_file(events)


def measure(size: int, first_sequence: int) -> tuple[float, float, float]:
    records = aggregated(sales_orders(size, lsn=first_sequence), per_record=PER_RECORD)
    payloads = [data for _, data in kpl.deaggregate(records[0][1])] if records else []
    handler_runs, build_runs, decode_runs = [], [], []
    for run in range(RUNS):
        event = lambda_event(records, first_sequence=first_sequence + run * len(records))
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            response = handler_module.handler(event, Context())
            handler_runs.append(time.perf_counter() - start)
        assert response == {"batchItemFailures": []}, response
        start = time.perf_counter()
        _build_files(records)
        build_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _, data in records:
            for _, payload in kpl.deaggregate(data):
                contract.decode(payload)
        decode_runs.append(time.perf_counter() - start)
    assert payloads
    return (_median_rate(size, handler_runs), _median_rate(size, build_runs),
            _median_rate(size, decode_runs))


def run() -> str:
    emulator = Emulator()
    emulator.start()
    try:
        apply_client_env(emulator.endpoint)
        create_resources(emulator, {})
        handler_module._s3.cache_clear()
        handler_module.logger.setLevel("WARNING")  # one log line per batch is not what is measured
        rows = []
        for i, size in enumerate(SIZES):
            handler_rate, build_rate, decode_rate = measure(size, first_sequence=(i + 1) * 1_000_000)
            rows.append(f"| {size:,} | {handler_rate:,.0f} | {build_rate:,.0f} | {decode_rate:,.0f} | "
                        f"{handler_rate / decode_rate:.2f} |")
    finally:
        emulator.stop()
    return (f"## Stream processor (as of {dt.date.today().isoformat()})\n\n"
            "Events/s through the stream-processor handler (de-aggregate -> decode -> type -> Avro "
            "-> Parquet -> S3 on the emulator), sales_order events aggregated 100 per Kinesis record; "
            f"median of {RUNS} runs per batch size. Reference: bare `contract.decode` of the same "
            "events in the same run; ratio = handler / reference.\n\n"
            "| events per batch | handler events/s | without S3 events/s | reference decode events/s "
            "| ratio |\n|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")

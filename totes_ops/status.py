"""How far behind each stage is, read from the stages' own hand-offs (never from their internals).

- source: replication slot lag in bytes (``pg_current_wal_lsn() - confirmed_flush_lsn``), the
  age of the capture's last heartbeat (CloudWatch ``CaptureHeartbeat``) and, from the local
  capture's ``<state-dir>/status/capture.json``, its phase and initial snapshot progress;
- table copies: the tables being copied into the lake now (initial snapshot or resync), per table
  rows done / estimate, rate and ETA, from the status files of the live capture and resync
  processes (``capture.json``, ``resync.json``; capture.progress);
- stream: the stream processor's iterator age (CloudWatch ``IteratorAgeMilliseconds``, else the
  local runner's ``<state-dir>/status/process.json``: the largest ``millis_behind_latest`` of its
  shards);
- files: processed files waiting in the loader's queue (visible + in flight), dead-lettered
  objects and the loader's dead-letter queue depth;
- warehouse: the last fact ``loaded_at``, the age of the newest source change loaded, and the
  end-to-end latency percentiles (``loaded_at - source_commit_ts``) of streamed fact rows loaded in
  the last five minutes (snapshot rows excluded);
- latency per stage (``pipeline_latency``, one row per file loaded in the last five minutes): p50
  and p99 of each hop of the waterfall (totes_cdc.stages). A stage measured once per file takes
  its percentiles over the files; one measured per row (from the source commit) takes its p50 over
  the files' p50s and its p99 over the files' p99s.

A piece that cannot be read (stage not running, table not there yet, no credentials) is reported
as unknown with the reason; it never fails the whole report. Alerts are the thresholds of
``settings()["alarms"]`` that a known value exceeds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import boto3
import psycopg2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from psycopg2 import sql

from capture.progress import TableProgress
from local_aws import process_status
from totes_cdc import db, metric_names
from totes_cdc.contract import OP_SNAPSHOT
from totes_cdc.db import connect
from totes_cdc.errors import TotesError, first_line
from totes_cdc.runtime import alive
from totes_cdc.settings import settings
from totes_cdc.stages import STAGES
from warehouse_loader.derivation import FACTS

log = logging.getLogger(__name__)

T = TypeVar("T")
LATENCY_WINDOW = timedelta(minutes=5)
LATENCY_ROWS = 10_000  # the newest rows of each fact table the latency reading looks at, at most
HEARTBEAT_LOOKBACK = timedelta(hours=1)
# Status must answer quickly even when a service is down.
AWS_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
EXPECTED_ERRORS = (psycopg2.Error, TotesError, BotoCoreError, ClientError, OSError, ValueError,
                   LookupError, TypeError)


@dataclass
class Status:
    """One reading of the pipeline; None means unknown (``unknown`` says why)."""

    slot_lag_bytes: int | None = None
    capture: dict[str, Any] | None = None
    copies: list[dict[str, Any]] | None = None  # tables being copied (TableProgress.as_dict)
    heartbeat_age_s: float | None = None
    stream_lag_ms: float | None = None
    files_waiting: int | None = None
    dead_lettered_objects: int | None = None
    dead_letter_queue_depth: int | None = None
    last_loaded_at: str | None = None
    last_event_age_s: float | None = None
    latency_ms: dict[str, float] | None = None
    stages_ms: dict[str, dict[str, float | None]] | None = None  # stage -> {"p50", "p99"}
    heartbeat_missing: bool = False
    alerts: list[str] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aws(service: str) -> Any:
    """A client for the AWS the environment points at, made once (boto3 clients are thread-safe)."""
    return _client(service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID"))


@cache
def _client(service: str, endpoint: str | None, key_id: str | None) -> Any:
    """Cached per endpoint and key, so a changed environment gets a new client."""
    return boto3.client(service, region_name=settings()["region"], config=AWS_CONFIG)


def _latest_metric(name: str, since: timedelta, statistic: str,
                   dimensions: dict[str, str] | None = None) -> tuple[datetime, float] | None:
    """(timestamp, value) of the newest datapoint of ``name`` (with exactly ``dimensions``: a
    series in CloudWatch is its name and dimensions) within ``since``, if any."""
    now = datetime.now(UTC)
    points = _aws("cloudwatch").get_metric_statistics(
        Namespace=metric_names.namespace(), MetricName=name, StartTime=now - since,
        EndTime=now + timedelta(minutes=1), Period=60, Statistics=[statistic],
        Dimensions=[{"Name": k, "Value": v} for k, v in (dimensions or {}).items()])["Datapoints"]
    if not points:
        return None
    newest = max(points, key=lambda p: p["Timestamp"])
    return newest["Timestamp"], float(newest[statistic])


def heartbeat_age_s() -> float | None:
    """Seconds since the capture's last heartbeat; None when there was none in the last hour."""
    point = _latest_metric("CaptureHeartbeat", HEARTBEAT_LOOKBACK, "Sum", metric_names.dimensions("capture"))
    return None if point is None else (datetime.now(UTC) - point[0]).total_seconds()


def capture_progress(state_dir: Path) -> dict[str, Any]:
    """The capture's phase and snapshot progress (rows and tables done of their totals)."""
    path = state_dir / "status" / "capture.json"
    if not path.is_file():
        raise LookupError("no local capture status")
    reading = json.loads(path.read_text(encoding="utf-8"))
    # (rows, estimated total, done) per table: the summary capture writes once it streams, or
    # before that (its snapshot under way) its copies
    tables = ([(t["rows"], t["total"], t["done"]) for t in reading["snapshot"].values()]
              if "snapshot" in reading else
              [(c["rows_done"], c["estimated_total"], c["finished"]) for c in reading.get("copies", [])])
    return {"phase": reading["phase"], "behind_ms": reading.get("millis_behind_source"),
            "snapshot_rows": sum(rows for rows, _, _ in tables),
            "snapshot_total": sum(total or 0 for _, total, _ in tables),
            "tables_done": sum(1 for _, _, done in tables if done), "tables": len(tables)}


COPY_STATUS_FILES = ("capture.json", "resync.json")  # capture's; a resync's (capture.cli)


def copies(state_dir: Path) -> list[dict[str, Any]]:
    """The tables being copied now, from the status files of live capture and resync processes
    (a file whose process is gone, say a resync killed, is not read)."""
    paths = [p for name in COPY_STATUS_FILES if (p := state_dir / "status" / name).is_file()]
    if not paths:
        raise LookupError("no local capture or resync status")
    readings = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    return [copy for reading in readings if alive(int(reading.get("pid", 0)))
            for copy in reading.get("copies", []) if not copy["finished"]]


def stream_lag_ms(state_dir: Path) -> float:
    point = _latest_metric("IteratorAgeMilliseconds", LATENCY_WINDOW, "Maximum")
    if point is not None:
        return point[1]
    try:
        return process_status.largest_lag_ms(state_dir)
    except LookupError as exc:
        raise LookupError(f"no IteratorAgeMilliseconds metric and {exc}") from None


def _queue_depth(name: str) -> int:
    sqs = _aws("sqs")
    attrs = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def files_waiting() -> int:
    """Files announced and not yet applied: on the stream's queue and on the snapshot files' queue."""
    queues = settings()["queues"]
    return _queue_depth(queues["processed_files"]) + _queue_depth(queues["snapshot_files"])


def dead_letter_queue_depth() -> int:
    return _queue_depth(settings()["queues"]["processed_files_dlq"])


def dead_lettered_objects() -> int:
    s = settings()
    pages = _aws("s3").get_paginator("list_objects_v2")
    return sum(page.get("KeyCount", 0)
               for prefix in (s["prefixes"]["dead_letter_records"], s["prefixes"]["dead_letter_files"])
               for page in pages.paginate(Bucket=s["buckets"]["dead_letter"], Prefix=prefix))


def _newest_facts(columns: str, where: str) -> sql.Composed:
    """``columns`` of the newest LATENCY_ROWS rows by ``loaded_at`` of each fact table that match
    ``where``, joined by UNION ALL (constant SQL; ``{t}`` in ``where`` names the table).

    Each branch reads a loaded_at index backwards (the streamed rows' own, migration 021, when
    ``where`` leaves the snapshot's out) and stops at LATENCY_ROWS, so a reading costs the same at
    any rate, with any history and during a snapshot load. Unbounded, it read every row of the last
    five minutes (hundreds of thousands after a minute at thousands of changes/s), and with
    5,000,000 fact rows the planner's guess at them priced the reading above ``jit_above_cost``:
    JIT then compiled it in every new connection (30-40 ms of CPU each, every 5 s from the
    dashboard).
    """
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT {} FROM {} WHERE {} ORDER BY loaded_at DESC LIMIT %(rows)s)").format(
            sql.SQL(columns), sql.Identifier("public", fact.table),
            sql.SQL(where).format(t=sql.Identifier("public", fact.table)))
        for fact in FACTS)


_RECENT = "loaded_at >= (SELECT max(loaded_at) FROM {t}) - %(window)s"
_STREAMED = "source_op <> %(snapshot)s AND "
# The newest load, and the newest source change among the rows loaded in the LATENCY_WINDOW before
# it: the streamed rows read apart, as during a snapshot or resync load the newest rows are
# snapshot rows, whose commit time is the snapshot's.
LAST_LOAD_SQL = sql.SQL(
    "SELECT max(loaded_at), extract(epoch FROM now() - max(source_commit_ts)) FROM ({} UNION ALL {}) f"
).format(_newest_facts("loaded_at, source_commit_ts", _RECENT),
         _newest_facts("loaded_at, source_commit_ts", _STREAMED + _RECENT))
# Latency p50/p95/p99 of the streamed rows loaded in the LATENCY_WINDOW (at most LATENCY_ROWS a table).
LATENCY_SQL = sql.SQL(
    "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms), count(*) FROM ({}) f"
).format(_newest_facts("extract(epoch FROM loaded_at - source_commit_ts) * 1000 AS ms",
                       _STREAMED + "loaded_at > now() - %(window)s"))
READING_PARAMS = {"window": LATENCY_WINDOW, "rows": LATENCY_ROWS, "snapshot": OP_SNAPSHOT}


def warehouse_reading(warehouse_dsn: str) -> tuple[str | None, float | None, dict[str, float] | None]:
    """(last loaded_at, age in s of the newest source change loaded, latency percentiles in ms)."""
    conn = connect(warehouse_dsn, "warehouse", connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(LAST_LOAD_SQL, READING_PARAMS)
            last_loaded, last_age = cur.fetchone()
            cur.execute(LATENCY_SQL, READING_PARAMS)
            percentiles, count = cur.fetchone()
    finally:
        conn.close()
    latency = (dict(zip(("p50", "p95", "p99"), (float(p) for p in percentiles), strict=True))
               if count else None)
    return (last_loaded.isoformat() if last_loaded else None,
            None if last_age is None else float(last_age), latency)


def stage_latency(warehouse_dsn: str) -> dict[str, dict[str, float | None]]:
    """Per stage, p50 and p99 in ms (None: not measured, e.g. snapshot files only) over the files
    loaded in the last LATENCY_WINDOW."""
    percentiles = sql.SQL(", ").join(
        sql.SQL("percentile_cont(0.5) WITHIN GROUP (ORDER BY {}), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY {})").format(
            sql.Identifier(stage.p50_column), sql.Identifier(stage.p99_column))
        for stage in STAGES)
    conn = connect(warehouse_dsn, "warehouse", connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*), {} FROM public.pipeline_latency "
                                "WHERE loaded_at > now() - %(window)s").format(percentiles),
                        {"window": LATENCY_WINDOW})
            count, *values = cur.fetchone()
    finally:
        conn.close()
    if not count:
        raise LookupError("no file with stage times loaded in the last "
                          f"{LATENCY_WINDOW.total_seconds() / 60:.0f} minutes")
    return {stage.name: {"p50": p50, "p99": p99}
            for stage, p50, p99 in zip(STAGES, values[::2], values[1::2], strict=True)}


def _read(status: Status, what: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except EXPECTED_ERRORS as exc:
        reason = first_line(exc)
        status.unknown[what] = reason
        log.debug("status: %s unknown: %s", what, reason)
        return None


def alerts(status: Status) -> list[str]:
    """The alarm thresholds that known values exceed."""
    a = settings()["alarms"]
    checks = [
        (status.slot_lag_bytes, a["slot_lag_bytes"], "replication slot lag {} bytes > {}"),
        (status.stream_lag_ms, a["iterator_age_ms"], "stream lag {:.0f} ms > {}"),
        (status.latency_ms and status.latency_ms["p99"], a["end_to_end_latency_p99_ms"],
         "end-to-end latency p99 {:.0f} ms > {}"),
        (status.heartbeat_age_s, a["heartbeat_missing_seconds"],
         "capture heartbeat {:.0f} s old > {}"),
    ]
    fired = [text.format(value, limit) for value, limit, text in checks
             if value is not None and value > limit]
    dead = (status.dead_lettered_objects or 0) + (status.dead_letter_queue_depth or 0)
    if dead >= a["dead_letter_objects"]:
        fired.append(f"{dead} dead-lettered objects/messages")
    if status.heartbeat_missing:
        fired.append("capture heartbeat missing")
    return fired


def collect(source_dsn: str | None, warehouse_dsn: str | None, state_dir: Path) -> Status:
    """Read every piece that can be read now."""
    status = Status()
    if source_dsn:
        status.slot_lag_bytes = _read(status, "slot_lag_bytes", lambda: db.slot_lag_bytes(
            source_dsn, settings()["capture"]["slot"]))
    else:
        status.unknown["slot_lag_bytes"] = "no source DSN"
    status.capture = _read(status, "capture", lambda: capture_progress(state_dir))
    status.copies = _read(status, "copies", lambda: copies(state_dir))
    status.heartbeat_age_s = _read(status, "heartbeat_age_s", heartbeat_age_s)
    if status.heartbeat_age_s is None and "heartbeat_age_s" not in status.unknown:
        status.heartbeat_missing = True
        status.unknown["heartbeat_age_s"] = "no capture heartbeat in the last hour"
    status.stream_lag_ms = _read(status, "stream_lag_ms", lambda: stream_lag_ms(state_dir))
    status.files_waiting = _read(status, "files_waiting", files_waiting)
    status.dead_lettered_objects = _read(status, "dead_lettered_objects", dead_lettered_objects)
    status.dead_letter_queue_depth = _read(status, "dead_letter_queue_depth", dead_letter_queue_depth)
    if warehouse_dsn:
        reading = _read(status, "warehouse", lambda: warehouse_reading(warehouse_dsn))
        if reading:
            status.last_loaded_at, status.last_event_age_s, status.latency_ms = reading
        status.stages_ms = _read(status, "stages", lambda: stage_latency(warehouse_dsn))
    else:
        status.unknown["warehouse"] = "no warehouse DSN"
    status.alerts = alerts(status)
    return status


def _show(value: Any, unit: str = "") -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return str(value)


def _snapshot(capture: dict[str, Any] | None) -> str:
    if capture is None:
        return "unknown"
    rows, total = capture["snapshot_rows"], capture["snapshot_total"]
    of = f" of {total:,}" if total else ""  # tables never analysed have no estimate
    share = f" ({100 * rows / total:.0f}%)" if total else ""
    return (f"{capture['phase']}: {rows:,}{of} rows{share}, "
            f"{capture['tables_done']} of {capture['tables']} tables done")


def _copies(copies: list[dict[str, Any]] | None) -> list[tuple[str, str, str]]:
    if not copies:
        return [("source", "table copies", "unknown" if copies is None else "none running")]
    return [("source", "table copy", TableProgress(**copy).describe()) for copy in copies]


def _stage(stages_ms: dict[str, dict[str, float | None]] | None, name: str) -> str:
    if stages_ms is None:
        return "unknown"
    return f"p50 {_show(stages_ms[name]['p50'], ' ms')}, p99 {_show(stages_ms[name]['p99'], ' ms')}"


def render(status: Status) -> str:
    """The report as aligned text lines, one per measure, then alerts and unknown reasons."""
    latency = status.latency_ms or {}
    rows = [
        ("source", "replication slot lag", _show(status.slot_lag_bytes, " bytes")),
        ("source", "capture snapshot", _snapshot(status.capture)),
        *_copies(status.copies),
        ("source", "capture heartbeat age", _show(status.heartbeat_age_s, " s")),
        ("stream", "stream lag", _show(status.stream_lag_ms, " ms")),
        ("files", "files waiting", _show(status.files_waiting)),
        ("files", "dead-lettered objects", _show(status.dead_lettered_objects)),
        ("files", "dead-letter queue depth", _show(status.dead_letter_queue_depth)),
        ("warehouse", "last fact loaded_at", _show(status.last_loaded_at)),
        ("warehouse", "last event age", _show(status.last_event_age_s, " s")),
        *(("warehouse", f"end-to-end latency {p}", _show(latency.get(p), " ms"))
          for p in ("p50", "p95", "p99")),
        *(("latency", stage.label, _stage(status.stages_ms, stage.name)) for stage in STAGES),
    ]
    lines = [f"{stage:<10} {what:<26} {value}" for stage, what, value in rows]
    lines.append("alerts: " + ("; ".join(status.alerts) if status.alerts else "none"))
    lines.extend(f"unknown {what}: {why}" for what, why in status.unknown.items())
    return "\n".join(lines)

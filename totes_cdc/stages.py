"""The latency waterfall's stages: what a processed file carries and what the warehouse keeps.

The stream processor writes, into each processed Parquet file's key-value metadata under
:data:`METADATA_KEY`, a JSON object of epoch seconds: ``capture_read`` (capture read the batch's
last event: the latest of the times capture tags its Kinesis records with, totes_cdc.kpl; null when
no record carries one), ``kinesis_accepted`` (Kinesis accepted the batch's last record),
``processor_read`` (the handler started on the batch) and ``file_written`` (the file complete,
just before its put). The loader adds its own time, just before the file's commit, and keeps one
row per file in ``pipeline_latency`` (warehouse_loader/latency.py).

A change passes: source commit -> capture read -> Kinesis accepted -> processor read -> file
written -> warehouse commit. Each hop after capture read takes the batch's latest time at its
start, so a change's wait for the later records of its batch (capture's batching, the stream
mapping's batching window) counts in "commit -> capture read" (the two stages from the commit are
per row; the others once per file).
"""

from __future__ import annotations

from dataclasses import dataclass

METADATA_KEY = b"totes_cdc.stages"


@dataclass(frozen=True)
class Stage:
    """One hop: its label, its ``pipeline_latency`` columns for p50 and p99 (the same column for a
    stage measured once per file) and the loader's CloudWatch metric of it (None: none)."""

    name: str
    label: str
    p50_column: str
    p99_column: str
    metric: str | None


STAGES = (
    Stage("commit_to_capture", "commit -> capture read", "commit_to_capture_p50_ms",
          "commit_to_capture_p99_ms", "CommitToCaptureMs"),
    Stage("capture_to_kinesis", "capture read -> Kinesis", "capture_to_kinesis_ms",
          "capture_to_kinesis_ms", "CaptureToKinesisMs"),
    Stage("kinesis_to_processor", "Kinesis -> processor read", "kinesis_to_processor_ms",
          "kinesis_to_processor_ms", "KinesisToProcessorMs"),
    Stage("processor_to_file", "processor read -> file", "processor_to_file_ms",
          "processor_to_file_ms", "ProcessorToFileMs"),
    Stage("file_to_warehouse", "file -> warehouse commit", "file_to_warehouse_ms",
          "file_to_warehouse_ms", "FileToWarehouseMs"),
    # The loader already emits EndToEndLatencyMs (the largest over a file's fact rows).
    Stage("end_to_end", "source commit -> warehouse", "end_to_end_p50_ms", "end_to_end_p99_ms", None),
)

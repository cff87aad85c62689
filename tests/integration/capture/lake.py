"""What a snapshot put in the lake: its events (raw zone) and its completion markers (processed zone)."""

from __future__ import annotations

import io

import boto3
import pyarrow.parquet as pq

from totes_cdc.contract import ChangeEvent
from totes_cdc.lakefiles import LakeLocation, avro_events
from totes_cdc.snapshot_marker import SnapshotMarker, read_marker


def _keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _body(bucket: str, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


def read_lake() -> list[ChangeEvent]:
    """Every event of the raw zone (snapshot reads: nothing else writes it in these tests)."""
    lake = LakeLocation.from_settings()
    return [event for key in _keys(lake.raw_bucket, lake.raw_prefix)
            for event in avro_events(_body(lake.raw_bucket, key))]


def processed_keys() -> list[str]:
    lake = LakeLocation.from_settings()
    return _keys(lake.processed_bucket, lake.processed_prefix)


def markers() -> list[SnapshotMarker]:
    lake = LakeLocation.from_settings()
    found = []
    for key in processed_keys():
        metadata = pq.read_schema(io.BytesIO(_body(lake.processed_bucket, key))).metadata
        marker = read_marker(metadata)
        if marker is not None:
            found.append(marker)
    return found


def positioned(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """Distinct events in position order: the order the loader's result equals."""
    unique = {e.identity: e for e in events}
    return sorted(unique.values(), key=lambda e: (e.lsn, e.seq))


def snapshot_twins() -> list[tuple[list[ChangeEvent], list[dict[str, object]] | None]]:
    """Each raw snapshot file's events beside the rows of its processed twin (None: no twin)."""
    lake = LakeLocation.from_settings()
    processed = set(processed_keys())
    twins = []
    for key in _keys(lake.raw_bucket, lake.raw_prefix):
        twin = lake.processed_prefix + key[len(lake.raw_prefix):-len(".avro")] + lake.processed_suffix
        rows = (pq.read_table(io.BytesIO(_body(lake.processed_bucket, twin))).to_pylist()
                if twin in processed else None)
        twins.append((avro_events(_body(lake.raw_bucket, key)), rows))
    return twins

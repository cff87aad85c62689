"""Durable snapshot progress: per table, its block ranges, which are in the lake, and its marker.

A table is read in ranges of its heap blocks (``ctid``), planned once, at its first read. A range
is done once its files are in the lake: then its read position (the snapshot's LSN), its row count
and its processed keys are saved. A table is complete once its completion marker is in the lake.
Stored as a local JSON file, or as an S3 object in AWS, behind the two-method :class:`StateStore`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
import botocore.exceptions

from capture.errors import CaptureError
from totes_cdc.jsonfile import write_atomically
from totes_cdc.lakefiles import StoreError

BlockRange = tuple[int, int | None]
"""First heap block, end block (exclusive; None: to the end of the table)."""


@dataclass
class RangeRead:
    """A range whose files are in the lake."""

    lsn: int
    """The snapshot it was read in."""
    rows: int
    files: list[str]
    """Processed keys of its files."""


@dataclass
class TableProgress:
    ranges: list[BlockRange] = field(default_factory=list)
    done: dict[int, RangeRead] = field(default_factory=dict)
    """Range index -> its read."""
    marker: str | None = None
    """Processed key of the completion marker, once written."""
    estimate: int | None = None
    """``pg_class.reltuples`` when the ranges were planned."""

    @property
    def complete(self) -> bool:
        return self.marker is not None

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.done.values())


@dataclass
class SnapshotState:
    slot: str
    snapshot_lsn: int
    tables: dict[str, TableProgress] = field(default_factory=dict)
    resync: bool = False
    """A re-read of tables whose rows may already be downstream (resync, lost state): the markers
    say so, and the loader tombstones what the read did not see."""
    reads: list[tuple[int, str]] = field(default_factory=list)
    """The snapshots read in and not yet checked for raw files without their progress: (LSN, the
    ISO date of their files' partition). See capture.snapshot.LakeSnapshot._adopt."""

    def complete(self, tables: list[str]) -> bool:
        return all(t in self.tables and self.tables[t].complete for t in tables)

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "snapshot_lsn": self.snapshot_lsn, "resync": self.resync,
                "reads": [list(r) for r in self.reads],
                "tables": {name: {"ranges": [list(r) for r in t.ranges], "marker": t.marker,
                                  "estimate": t.estimate,
                                  "done": {str(i): {"lsn": r.lsn, "rows": r.rows, "files": r.files}
                                           for i, r in t.done.items()}}
                           for name, t in self.tables.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotState:
        tables = {
            name: TableProgress(
                ranges=[(first, end) for first, end in t["ranges"]], marker=t["marker"],
                estimate=t["estimate"],
                done={int(i): RangeRead(r["lsn"], r["rows"], list(r["files"])) for i, r in t["done"].items()})
            for name, t in data["tables"].items()}
        return cls(data["slot"], data["snapshot_lsn"], tables, bool(data["resync"]),
                   [(lsn, day) for lsn, day in data.get("reads", [])])


class StateStore(Protocol):
    def load(self) -> SnapshotState | None: ...

    def save(self, state: SnapshotState) -> None: ...


class MemoryStateStore:
    """Progress kept in memory only: a resync is not resumed (run it again), so it saves nothing."""

    def __init__(self) -> None:
        self.state: SnapshotState | None = None

    def load(self) -> SnapshotState | None:
        return self.state

    def save(self, state: SnapshotState) -> None:
        self.state = state


class LocalStateStore:
    """``<state-dir>/capture/<slot>.json``, replaced atomically."""

    def __init__(self, state_dir: Path, slot: str) -> None:
        self.path = state_dir / "capture" / f"{slot}.json"

    def load(self) -> SnapshotState | None:
        try:
            return SnapshotState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise CaptureError(f"capture state file {self.path} is corrupt ({exc!r}); delete it to "
                               "take a fresh initial snapshot") from None

    def save(self, state: SnapshotState) -> None:
        write_atomically(self.path, state.to_json())


class S3StateStore:
    """``s3://<bucket>/<prefix><slot>.json`` (the raw bucket's capture-state prefix in AWS)."""

    def __init__(self, bucket: str, prefix: str, slot: str, client: Any = None) -> None:
        self.bucket = bucket
        self.key = f"{prefix}{slot}.json"
        self._client = client or boto3.client("s3")

    def load(self) -> SnapshotState | None:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise CaptureError(f"cannot read capture state s3://{self.bucket}/{self.key}: {exc}") from None
        except botocore.exceptions.BotoCoreError as exc:  # S3 out of reach: the session retries
            raise StoreError(f"cannot read capture state s3://{self.bucket}/{self.key}: {exc}") from None
        try:
            return SnapshotState.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise CaptureError(f"capture state s3://{self.bucket}/{self.key} is corrupt ({exc!r}); "
                               "delete it to take a fresh initial snapshot") from None

    def save(self, state: SnapshotState) -> None:
        """StoreError when S3 refuses or cannot be reached: the session retries from the progress
        saved before (what was read since is read again)."""
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.key,
                                    Body=json.dumps(state.to_json()).encode())
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise StoreError(f"cannot save capture state s3://{self.bucket}/{self.key}: {exc}") from None

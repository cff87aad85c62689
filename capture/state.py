"""Durable snapshot progress: which tables are read, up to which key, in which snapshot.

Per table: ``segments`` lists the snapshots its rows were read in, as ``(after_key, lsn)``: rows
with a key greater than ``after_key`` (up to the next segment's) were read in the snapshot taken at
``lsn``. A resumed snapshot adds a segment; the stream then drops the changes those rows already
include (see :class:`capture.snapshot.ResumeFilter`). Stored as a local JSON file, or as an S3
object in AWS, behind the two-method :class:`StateStore`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
import botocore.exceptions

from capture.errors import CaptureError
from totes_cdc.jsonfile import write_atomically

Key = list[str | None]


@dataclass
class TableProgress:
    done: bool = False
    rows: int = 0
    total: int | None = None
    last_key: Key | None = None
    key_columns: list[str] = field(default_factory=list)
    key_types: list[str] = field(default_factory=list)
    segments: list[tuple[Key | None, int]] = field(default_factory=list)


@dataclass
class SnapshotState:
    slot: str
    snapshot_lsn: int
    tables: dict[str, TableProgress] = field(default_factory=dict)

    def complete(self, tables: list[str]) -> bool:
        return all(t in self.tables and self.tables[t].done for t in tables)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotState:
        tables = {}
        for name, t in data["tables"].items():
            tables[name] = TableProgress(
                done=t["done"], rows=t["rows"], total=t["total"], last_key=t["last_key"],
                key_columns=t["key_columns"], key_types=t["key_types"],
                segments=[(k, lsn) for k, lsn in t["segments"]])
        return cls(data["slot"], data["snapshot_lsn"], tables)


class StateStore(Protocol):
    def load(self) -> SnapshotState | None: ...

    def save(self, state: SnapshotState) -> None: ...


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
        try:
            return SnapshotState.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise CaptureError(f"capture state s3://{self.bucket}/{self.key} is corrupt ({exc!r}); "
                               "delete it to take a fresh initial snapshot") from None

    def save(self, state: SnapshotState) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self.key,
                                Body=json.dumps(state.to_json()).encode())

"""Durable per-shard checkpoints of the local event source mapping.

A checkpoint is the sequence number of the last record whose batch is done (written by the handler
or handed to the on-failure destination). It is saved only after that, so a restart (even after
kill -9) resumes right after it: a record may be delivered twice, never skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from totes_cdc.jsonfile import write_atomically


@dataclass(frozen=True)
class Checkpoint:
    sequence_number: str | None = None  # last record done; None: nothing done yet
    finished: bool = False  # a closed shard read to its end: its children may start


class CheckpointStore:
    """One JSON file per shard under ``<state-dir>/checkpoints/<stream>/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, shard_id: str) -> Path:
        return self.directory / f"{shard_id}.json"

    def load(self, shard_id: str) -> Checkpoint:
        try:
            data = json.loads(self._path(shard_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Checkpoint()
        return Checkpoint(data["sequence_number"], data["finished"])

    def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        write_atomically(self._path(shard_id), {"sequence_number": checkpoint.sequence_number,
                                                "finished": checkpoint.finished})

"""The local Kinesis mapping's status file, ``<state-dir>/status/process.json``: the runner writes
it, ``totes-cdc status`` reads it; its path and shape are defined here only."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from totes_cdc.jsonfile import write_atomically


def path(state_dir: Path) -> Path:
    return state_dir / "status" / "process.json"


def write(state_dir: Path, stream: str, shards: Mapping[str, Mapping[str, Any]], *,
          finished_shards: Sequence[str], counts: Mapping[str, int], last_error: str | None) -> None:
    """``shards``: per shard read now, its checkpoint, ``millis_behind_latest`` and buffered records."""
    write_atomically(path(state_dir), {
        "component": "process",
        "pid": os.getpid(),
        "updated_at": dt.datetime.now(dt.UTC).isoformat(),
        "stream": stream,
        "shards": shards,
        "finished_shards": list(finished_shards),
        "counts": dict(counts),
        "last_error": last_error,
    })


def largest_lag_ms(state_dir: Path) -> float:
    """The largest ``millis_behind_latest`` of the shards being read; LookupError when there is no
    status file or no shard yet."""
    file = path(state_dir)
    if not file.is_file():
        raise LookupError(f"no local process status ({file})")
    shards = json.loads(file.read_text(encoding="utf-8"))["shards"].values()
    if not shards:
        raise LookupError("the local stream runner reads no shard yet")
    return float(max(shard["millis_behind_latest"] for shard in shards))

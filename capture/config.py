"""The capture service's one configuration object, built at the entry point and passed in."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from capture.source import qualified
from totes_cdc.errors import ConfigError
from totes_cdc.lakefiles import LakeLocation
from totes_cdc.settings import OVERRIDES_ENV, settings

T = TypeVar("T")
STATE_STORES = ("local", "s3")
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")  # what PostgreSQL accepts as a replication slot name


@dataclass(frozen=True)
class CaptureConfig:
    source_dsn: str = field(repr=False)
    """libpq DSN of the source database (from the environment or Secrets Manager, never logged)."""
    stream: str
    """Kinesis stream the change events go to."""
    tables: tuple[str, ...]
    """Captured tables as ``schema.table`` (given as ``table``, the schema is public)."""
    slot: str
    """Logical replication slot (created when missing)."""
    publication: str
    """Publication of the captured tables (created or extended when needed)."""
    state_dir: Path
    """Local folder for snapshot progress (local state store) and ``status/capture.json``."""
    lake: LakeLocation
    """Where snapshot files go: the stream processor's buckets and prefixes."""
    state_store: str = "local"
    """Where snapshot progress is kept: ``local`` (state_dir) or ``s3`` (raw bucket, capture-state/)."""
    heartbeat_seconds: float = 10.0
    """How often a heartbeat message is written to the source's WAL."""
    max_batch_delay_ms: int = 200
    """Longest time a change waits in memory before it is put to the stream."""
    flush_bytes: int = 4 * 1024 * 1024
    """Put to the stream as soon as this many bytes are buffered (bounds memory in big transactions)."""
    snapshot_chunk_rows: int = 100_000
    """About how many rows a snapshot range holds (one file each; progress is saved per range)."""
    snapshot_workers: int = 4
    """Connections reading a snapshot's ranges in parallel."""
    metrics_seconds: float = 5.0
    """How often metrics are published and the status file rewritten."""
    reconnect_max_seconds: float = 30.0
    """Longest wait between reconnection attempts to the source."""

    def __post_init__(self) -> None:
        """ConfigError naming the setting, for a value capture cannot run with."""
        if not SLOT_NAME.fullmatch(self.slot):
            raise ConfigError(f"invalid replication slot name {self.slot!r}: use up to 63 lower-case "
                              "letters, digits and underscores")
        if self.state_store not in STATE_STORES:
            raise ConfigError(f"state store {self.state_store!r} (--state-store, $TOTES_CDC_STATE_STORE) "
                              f"is not one of {', '.join(STATE_STORES)}")
        for name in ("heartbeat_seconds", "flush_bytes", "snapshot_chunk_rows", "snapshot_workers",
                     "metrics_seconds", "reconnect_max_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"capture setting {name} = {getattr(self, name)!r} must be above 0")
        if self.max_batch_delay_ms < 0:
            raise ConfigError(f"capture setting max_batch_delay_ms = {self.max_batch_delay_ms!r} "
                              "must not be negative")

    @classmethod
    def from_settings(cls, source_dsn: str, state_dir: Path, **overrides: object) -> CaptureConfig:
        """The configuration with settings.json's names and defaults, then ``overrides``."""
        cfg = settings()
        values: dict[str, object] = {
            "stream": cfg["stream"]["name"],
            "tables": tuple(cfg["source_tables"]),
            "slot": cfg["capture"]["slot"],
            "publication": cfg["capture"]["publication"],
            "heartbeat_seconds": _setting(cfg, "heartbeat_seconds", float),
            "max_batch_delay_ms": _setting(cfg, "max_batch_delay_ms", int),
            "snapshot_chunk_rows": _setting(cfg, "snapshot_chunk_rows", int),
            "snapshot_workers": _setting(cfg, "snapshot_workers", int),
            "lake": LakeLocation.from_settings(),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["tables"] = tuple(".".join(qualified(t)) for t in values["tables"])  # type: ignore[attr-defined]
        return cls(source_dsn=source_dsn, state_dir=state_dir, **values)  # type: ignore[arg-type]


def _setting(cfg: dict[str, Any], name: str, kind: Callable[[Any], T]) -> T:
    """``capture.<name>`` of the settings as ``kind``; ConfigError naming it when it is not one."""
    try:
        return kind(cfg["capture"][name])
    except KeyError:
        raise ConfigError(f"settings have no capture.{name} (infra/settings.json)") from None
    except (TypeError, ValueError):
        raise ConfigError(f"settings capture.{name} = {cfg['capture'][name]!r} cannot be read as "
                          f"{kind.__name__} (infra/settings.json, ${OVERRIDES_ENV})") from None

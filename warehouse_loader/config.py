"""The loader's one configuration object, built at its entry point (the Lambda handler, the local
SQS runner) and passed in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from totes_cdc.settings import settings


@dataclass(frozen=True)
class LoaderConfig:
    warehouse_dsn: Callable[[], str]
    """The warehouse DSN, asked for at each (re)connection: from a secret it follows a rotated
    password (never logged)."""
    dead_letter_bucket: str
    """``buckets.dead_letter``: where a file that breaks the contract is kept, with its reason."""
    dead_letter_prefix: str
    """``prefixes.dead_letter_files``."""
    snapshot_queue_url: str | None = None
    """The queue of snapshot files (``queues.snapshot_files``): a snapshot read's file or marker
    announced on another queue is passed on to it, so the long bulk loads have workers of their own
    and never hold up the stream's files. None: every file is applied where it arrives."""

    @classmethod
    def from_settings(cls, warehouse_dsn: Callable[[], str],
                      snapshot_queue_url: str | None = None) -> LoaderConfig:
        cfg = settings()
        return cls(warehouse_dsn, dead_letter_bucket=cfg["buckets"]["dead_letter"],
                   dead_letter_prefix=cfg["prefixes"]["dead_letter_files"],
                   snapshot_queue_url=snapshot_queue_url)

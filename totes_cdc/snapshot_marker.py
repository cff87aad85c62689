"""The completion marker of a table's snapshot read: written by capture, acted on by the loader.

When every range of a table's read (initial snapshot or resync) is in the lake, capture writes one
more processed object: a Parquet file with the contract's columns and zero rows, whose key-value
metadata :data:`METADATA_KEY` is the JSON of a :class:`SnapshotMarker`. The loader, notified of it
like of any processed file, makes sure every listed file is applied, then tombstones the table's
rows that are live with a position below ``(lsn, LOWEST_READ_SEQ)`` and that the read did not see
(ghost rows: gone from the source at the read).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq

from totes_cdc import contract
from totes_cdc.contract import Column, ContractError

METADATA_KEY = b"totes_cdc.snapshot"

NAME_PREFIX = "snapshot-"
"""How the names of a read's files and of its completion marker begin (``snapshot-<LSN>-…``); a
stream batch's files are named after their shard."""


def is_snapshot_key(key: str) -> bool:
    """Whether a lake object key names a snapshot read's file or its completion marker."""
    return key.rsplit("/", 1)[-1].startswith(NAME_PREFIX)


LOWEST_READ_SEQ = contract.snapshot_seq(1)
"""The lowest seq a snapshot read can have: (lsn, LOWEST_READ_SEQ) sorts before every read at lsn."""


@dataclass(frozen=True)
class SnapshotMarker:
    """A table's complete read.

    ``lsn``: the lowest read position of the table's ranges (a resumed read has ranges read in a
    later snapshot, at higher positions); ``files``: the processed keys of every range file;
    ``rows``: how many rows those files hold; ``resync``: an on-demand re-read, not the initial one.
    """

    schema: str
    table: str
    lsn: int
    files: tuple[str, ...]
    rows: int
    resync: bool

    def to_json(self) -> str:
        return json.dumps({"schema": self.schema, "table": self.table, "lsn": self.lsn,
                           "files": list(self.files), "rows": self.rows, "resync": self.resync})

    @classmethod
    def from_json(cls, text: str | bytes) -> SnapshotMarker:
        try:
            data = json.loads(text)
            marker = cls(str(data["schema"]), str(data["table"]), int(data["lsn"]),
                         tuple(str(f) for f in data["files"]), int(data["rows"]), bool(data["resync"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"malformed snapshot marker {text!r:.200}: {exc!r}") from exc
        return marker


def marker_parquet(marker: SnapshotMarker, columns: Sequence[Column]) -> bytes:
    """The marker's processed object: the table's processed schema, zero rows, the marker JSON."""
    schema = contract.parquet_schema(columns).with_metadata({METADATA_KEY: marker.to_json().encode()})
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    return buf.getvalue()


def read_marker(metadata: Mapping[bytes, bytes] | None) -> SnapshotMarker | None:
    """The marker in a processed file's key-value metadata (``pa.Schema.metadata``); None: a data file."""
    text = (metadata or {}).get(METADATA_KEY)
    return None if text is None else SnapshotMarker.from_json(text)


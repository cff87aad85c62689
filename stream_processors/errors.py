"""The stream processor's errors: a poison record (terminal) and a store failure (transient)."""

from totes_cdc.errors import TerminalError
from totes_cdc.lakefiles import StoreError

__all__ = ["PoisonRecordError", "StoreError"]


class PoisonRecordError(TerminalError):
    """A Kinesis record holding data that cannot be de-aggregated, decoded or typed."""

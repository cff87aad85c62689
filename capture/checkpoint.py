"""The acknowledged LSN: the one place that decides what the slot may forget.

The server keeps all WAL after the slot's confirmed flush position, and restarts decoding there.
So that position may move only past transactions whose every event Kinesis has accepted: if it
moved earlier, a crash would lose those events forever. :meth:`Checkpoint.completed` records that
a transaction (or a heartbeat) has been handed to the producer in full; the producer's batches
carry that position as their marker, and :meth:`Checkpoint.accept` takes a marker only once the
producer reports its batch accepted. The position only moves forward; keepalive replies report
it, never the received position.
"""

from __future__ import annotations


class Checkpoint:
    def __init__(self, start_lsn: int) -> None:
        self._acked = start_lsn
        self._completed = start_lsn

    @property
    def acked(self) -> int:
        """The LSN up to which everything is in the stream (what the slot may confirm)."""
        return self._acked

    @property
    def completed_lsn(self) -> int:
        """Everything up to here has been given to the producer (the marker of its next batch)."""
        return self._completed

    def completed(self, lsn: int) -> None:
        """Everything up to ``lsn`` has been given to the producer (not yet accepted)."""
        self._completed = max(self._completed, lsn)

    def accept(self, lsn: int) -> bool:
        """The producer's batch with marker ``lsn`` is in the stream. True when the position moved."""
        if lsn > self._completed:
            raise ValueError(f"accepting {lsn:X}, beyond what was completed ({self._completed:X})")
        if lsn > self._acked:
            self._acked = lsn
            return True
        return False

"""The acknowledged LSN: the one place that decides what the slot may forget.

The server keeps all WAL after the slot's confirmed flush position, and restarts decoding there.
So that position may move only past transactions whose every event Kinesis has accepted: if it
moved earlier, a crash would lose those events forever. :meth:`Checkpoint.completed` records that
a transaction (or a heartbeat) has been handed to the producer in full; :meth:`accepted`, called
only right after the producer's flush returned, makes those positions the acknowledged one. The
position only moves forward; keepalive replies report it, never the received position.
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
    def pending(self) -> bool:
        """Whether completed positions wait for a flush."""
        return self._completed > self._acked

    def completed(self, lsn: int) -> None:
        """Everything up to ``lsn`` has been given to the producer (not yet accepted)."""
        self._completed = max(self._completed, lsn)

    def accepted(self) -> bool:
        """The producer flushed: acknowledge what was completed. True when the position moved."""
        if self._completed > self._acked:
            self._acked = self._completed
            return True
        return False

"""What the capture loop does next, as pure code: no socket, no clock, no Kinesis.

The loop (``capture/service.py``) reads messages and does the I/O; after each message it asks
:meth:`StreamPolicy.on_message` whether a batch is due, and otherwise (idle, a keepalive, a batch
due) :meth:`StreamPolicy.decide` for one :class:`Step`: what to submit, which position to report
to the server, whether to heartbeat or publish metrics, whether to read on, and when to wake.

The rule that matters: a status update reports :attr:`Checkpoint.acked`, the position up to
which the producer has reported every event accepted by the stream, never a received position.
A keepalive that asks for a reply gets one with that same position.
"""

from __future__ import annotations

from dataclasses import dataclass

from capture.checkpoint import Checkpoint

POLL_SECONDS = 0.02
"""How soon to look again at a producer that is still sending (to acknowledge promptly)."""
IDLE_SECONDS = 1.0
"""Longest sleep with nothing due."""


@dataclass(frozen=True)
class Timing:
    batch_delay: float
    """Longest time an event waits in the producer's buffer before it is submitted."""
    flush_bytes: int
    """Submit as soon as this many bytes are buffered."""
    heartbeat: float
    """Seconds between heartbeats written to the source."""
    status: float
    """Seconds between status updates when nothing else sends one (below wal_sender_timeout)."""
    metrics: float
    """Seconds between metric publications."""


@dataclass(frozen=True)
class Step:
    submit: int | None
    """Submit the buffered events with this marker (the position they complete), or nothing."""
    status: int | None
    """Send a status update reporting this position, or nothing."""
    heartbeat: bool
    publish: bool
    read: bool
    """Read the next message; False while the producer has no room (backpressure)."""
    wake: float
    """The time by which :meth:`StreamPolicy.decide` must run again if nothing arrives."""


class StreamPolicy:
    def __init__(self, checkpoint: Checkpoint, timing: Timing, now: float) -> None:
        self.checkpoint = checkpoint
        self.timing = timing
        self._flush_due: float | None = None
        self._reply = False
        self._next_heartbeat = now + timing.heartbeat
        self._next_status = now + timing.status
        self._next_metrics = now + timing.metrics

    def on_message(self, now: float, buffered_bytes: int) -> bool:
        """A message was handled. True when a batch is due (call :meth:`decide`), else read on."""
        due = self._flush_due
        if due is None:
            self._flush_due = now + self.timing.batch_delay
            return buffered_bytes >= self.timing.flush_bytes
        return now >= due or buffered_bytes >= self.timing.flush_bytes

    def on_keepalive(self, reply_requested: bool) -> None:
        self._reply = self._reply or reply_requested

    def acknowledge(self, accepted: int | None) -> int | None:
        """The position to report now that the producer has accepted up to marker ``accepted``
        (None when that moves nothing)."""
        if accepted is not None and self.checkpoint.accept(accepted):
            return self.checkpoint.acked
        return None

    def decide(self, now: float, *, accepted: int | None, buffered_bytes: int, room: bool,
               busy: bool) -> Step:
        """The next step, given the producer's accepted marker, buffered bytes, whether it can take
        a batch now (``room``) and whether it is still sending (``busy``)."""
        t = self.timing
        due = self._flush_due is not None and (now >= self._flush_due or buffered_bytes >= t.flush_bytes)
        submit = None
        if due and room:
            submit = self.checkpoint.completed_lsn
            self._flush_due = None
        status = self.acknowledge(accepted)
        if status is None and (self._reply or now >= self._next_status):
            status = self.checkpoint.acked
        if status is not None:
            self._reply = False
            self._next_status = now + t.status
        heartbeat = now >= self._next_heartbeat
        if heartbeat:
            self._next_heartbeat = now + t.heartbeat
        publish = now >= self._next_metrics
        if publish:
            self._next_metrics = now + t.metrics
        read = not (due and not room)
        wake = min(self._next_heartbeat, self._next_status, self._next_metrics,
                   now + (POLL_SECONDS if busy or not read else IDLE_SECONDS))
        if self._flush_due is not None and read:
            wake = min(wake, self._flush_due)
        return Step(submit, status, heartbeat, publish, read, wake)

"""The capture package's errors: terminal ones stop the service with a clear message, transient
ones (a source or stream outage) make it reconnect with backoff."""

from totes_cdc.errors import TerminalError, TransientError


class CaptureError(TerminalError):
    """Retrying cannot help: bad protocol bytes, an unusable source or stream."""


class DecodeError(CaptureError):
    """Bytes that are not a valid pgoutput message."""


class SourceUnavailable(TransientError):
    """The source database or its replication connection went away."""


class Stopped(Exception):
    """The service was asked to stop while waiting."""

"""The capture package's errors: terminal ones stop the service with a clear message. A source
outage is :class:`totes_cdc.errors.DatabaseUnavailable` (transient): capture reconnects with
backoff."""

from totes_cdc.errors import TerminalError


class CaptureError(TerminalError):
    """Retrying cannot help: bad protocol bytes, an unusable source or stream."""


class DecodeError(CaptureError):
    """Bytes that are not a valid pgoutput message."""


class Stopped(Exception):
    """The service was asked to stop while waiting."""

"""The capture package's errors: terminal ones stop the service with a clear message. A source
outage is :class:`totes_cdc.errors.DatabaseUnavailable` (transient): capture reconnects with
backoff."""

from totes_cdc.errors import TerminalError, TotesError


class CaptureError(TerminalError):
    """Retrying cannot help: bad protocol bytes, an unusable source or stream."""


class DecodeError(CaptureError):
    """Bytes that are not a valid pgoutput message."""


class Stopped(Exception):
    """The service was asked to stop while waiting."""


class ResyncFailed(TotesError):
    """A resync under way ended on a failure retrying may fix (the lake, the source): the resync is
    not resumable, so it is run again (exit 1), where a source not reached at all is a setting to
    check (exit 2)."""

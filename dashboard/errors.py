"""The dashboard's errors."""

from totes_cdc.errors import TerminalError


class BadRequest(TerminalError):
    """A request the page should not have made (unknown filter value shape): answered with 400."""

"""The two error roots every package derives from.

A *terminal* error cannot be fixed by retrying (bad settings, malformed data): it is reported with
what and where, and the data goes to a dead-letter location. A *transient* error (a server
restarting, throttling) is retried with backoff. Driver and AWS errors are translated into these
where they enter our code, carrying what an operator needs (LSN, table, object key); database
errors by SQLSTATE, in :mod:`totes_cdc.db`.
"""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when it has none), for one-line logs and reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TotesError(Exception):
    """Root of the project's errors."""


class TerminalError(TotesError):
    """Retrying cannot help."""


class TransientError(TotesError):
    """Retrying later may succeed."""


class ConfigError(TerminalError):
    """Wrong settings or an unusable environment: the CLI prints it and exits 2, no traceback."""


class DatabaseError(TerminalError):
    """A statement the database refuses for good (missing table, bad data, no privilege)."""


class DatabaseUnavailable(TransientError):
    """The database cannot be reached or dropped the connection (restart, failover, network)."""

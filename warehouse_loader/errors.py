"""The loader's two error roots: a bad file (dead-lettered) and a failure a retry may fix."""

from totes_cdc.errors import TerminalError, TransientError


class BadFileError(TerminalError):
    """A file that does not follow the contract; retrying cannot help, so it is dead-lettered."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class RejectedValuesError(BadFileError):
    """A file the warehouse refused for its values (a malformed date text, say): the rows not at
    fault can be applied without the others (apply.apply_separating)."""


class RetryableLoadError(TransientError):
    """The warehouse or S3 failed (unreachable, restarting, mid-apply); the message is redelivered."""

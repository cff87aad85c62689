"""The stream processor's errors: a poison record (terminal) and a store failure (transient)."""

from totes_cdc.errors import TerminalError, TransientError


class PoisonRecordError(TerminalError):
    """A Kinesis record holding data that cannot be de-aggregated, decoded or typed."""


class StoreError(TransientError):
    """S3 (or SQS, CloudWatch) refused or failed a request; retrying the batch may succeed."""

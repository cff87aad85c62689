"""Configuration of the handler and of the local event source mapping: frozen, built at the entry.

Both come from ``infra/settings.json`` (with ``$TOTES_CDC_SETTINGS_OVERRIDES``) and nothing else:
the loader, the S3 notification and Terraform read the same settings, so the processor writes
where they look.
"""

from __future__ import annotations

from dataclasses import dataclass

from totes_cdc.lakefiles import LakeLocation
from totes_cdc.settings import settings


@dataclass(frozen=True)
class ProcessorConfig:
    """Where the handler writes."""

    lake: LakeLocation
    """The raw zone (Avro, exactly as received) and the processed zone (Parquet), which the loader
    reads: ``buckets``, ``prefixes`` and ``suffixes`` (the S3 notification filters on the processed
    prefix and suffix)."""
    dead_letter_bucket: str
    """``buckets.dead_letter``: poison records, each with its error."""
    dead_letter_prefix: str
    """``prefixes.dead_letter_records``."""

    @classmethod
    def from_settings(cls) -> ProcessorConfig:
        cfg = settings()
        return cls(LakeLocation.from_settings(), dead_letter_bucket=cfg["buckets"]["dead_letter"],
                   dead_letter_prefix=cfg["prefixes"]["dead_letter_records"])


@dataclass(frozen=True)
class MappingConfig:
    """The event source mapping's settings (settings.json ``stream_processor_mapping``)."""

    stream: str
    region: str
    function_name: str  # the function the mapping invokes (named in the local Lambda context)
    failure_queue: str  # on-failure destination: SQS queue name
    batch_size: int
    batching_window_seconds: float
    bisect_on_function_error: bool
    maximum_retry_attempts: int  # -1: retry until the record expires
    maximum_record_age_seconds: int  # -1: no limit
    starting_position: str  # TRIM_HORIZON or LATEST
    report_batch_item_failures: bool

    @classmethod
    def from_settings(cls) -> MappingConfig:
        cfg = settings()
        mapping = cfg["stream_processor_mapping"]
        return cls(
            stream=cfg["stream"]["name"],
            region=cfg["region"],
            function_name=cfg["deploy"]["functions"]["stream_processor"]["name"],
            failure_queue=cfg["queues"]["stream_failures"],
            batch_size=int(mapping["batch_size"]),
            batching_window_seconds=float(mapping["maximum_batching_window_seconds"]),
            bisect_on_function_error=bool(mapping["bisect_batch_on_function_error"]),
            maximum_retry_attempts=int(mapping["maximum_retry_attempts"]),
            maximum_record_age_seconds=int(mapping["maximum_record_age_seconds"]),
            starting_position=mapping["starting_position"],
            report_batch_item_failures="ReportBatchItemFailures" in mapping["function_response_types"],
        )

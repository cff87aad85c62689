"""Writing a batch to S3: dead-letter documents, raw Avro files, processed Parquet files.

Every object is written at most once (totes_cdc.lakefiles.ObjectStore, a conditional put): a
retried or replayed batch, whose keys are the same, finds them present and writes nothing (so the
loader is not notified twice). The objects of one step are put concurrently: a batch's time is
then about one round trip per step rather than one per object, which is most of the stream's
latency when batches are small.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

from totes_cdc.lakefiles import AVRO_CONTENT_TYPE, PARQUET_CONTENT_TYPE, ObjectStore, Partition

from .columnar import ParsedBatch
from .config import ProcessorConfig
from .files import BatchId, batch_files
from .records import ParsedRecord, Poison

__all__ = ["BatchResult", "ObjectStore", "dead_letter_document", "dead_letter_key", "write_batch"]


@dataclass(frozen=True)
class BatchResult:
    """What a batch wrote: object keys (present now, written by this call or an earlier one)."""

    events: int
    raw_keys: tuple[str, ...]
    processed_keys: tuple[str, ...]
    dead_letter_keys: tuple[str, ...]


def dead_letter_key(config: ProcessorConfig, batch: BatchId, poison: Poison) -> str:
    position = "" if poison.sub_sequence is None else f"-{poison.sub_sequence}"
    return f"{config.dead_letter_prefix}{batch.shard_id}/{poison.sequence_number}{position}.json"


def dead_letter_document(batch: BatchId, poison: Poison, event_source_arn: str) -> bytes:
    return json.dumps({
        "error": poison.error,
        "event_source_arn": event_source_arn,
        "shard_id": batch.shard_id,
        "sequence_number": poison.sequence_number,
        "sub_sequence_number": poison.sub_sequence,
        "partition_key": poison.partition_key,
        "data_base64": base64.b64encode(poison.data).decode(),
    }, indent=1).encode()


def write_batch(store: ObjectStore, config: ProcessorConfig, batch: BatchId,
                parsed: ParsedBatch | Sequence[ParsedRecord], event_source_arn: str) -> BatchResult:
    """Dead-letter the poison, then the raw files, then the processed files (which announce
    themselves to the loader): whatever the loader sees is already in the raw zone."""
    if not isinstance(parsed, ParsedBatch):
        parsed = ParsedBatch([e for record in parsed for e in record.events],
                             tuple(poison for record in parsed for poison in record.poison))
    dead_letters = [(config.dead_letter_bucket, dead_letter_key(config, batch, poison),
                     dead_letter_document(batch, poison, event_source_arn), "application/json")
                    for poison in parsed.poison]
    store.put_all(dead_letters)

    def raw_key(partition: Partition) -> str:
        return partition.key(config.lake.raw_prefix, batch, ".avro")

    files = batch_files(parsed.events, raw_key, batch)
    raw = [(config.lake.raw_bucket, raw_key(f.partition), f.avro, AVRO_CONTENT_TYPE) for f in files]
    store.put_all(raw)
    processed = [(config.lake.processed_bucket,
                  f.partition.key(config.lake.processed_prefix, batch, config.lake.processed_suffix),
                  f.parquet, PARQUET_CONTENT_TYPE) for f in files]
    store.put_all(processed)
    return BatchResult(sum(f.events for f in files), tuple(put[1] for put in raw),
                       tuple(put[1] for put in processed), tuple(put[1] for put in dead_letters))

"""Writing a batch to S3: dead-letter documents, raw Avro files, processed Parquet files.

Every object is written at most once (a conditional put, ``If-None-Match: *``): objects are
immutable, and a retried or replayed batch, whose keys are the same, finds them present and
writes nothing (so the loader is not notified twice). botocore errors become StoreError here.

The objects of one step are put concurrently: a batch's time is then about one round trip per step
rather than one per object, which is most of the stream's latency when batches are small.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .columnar import ParsedBatch
from .config import ProcessorConfig
from .errors import StoreError
from .files import BatchId, Partition, batch_files
from .records import ParsedRecord, Poison

MAX_CONCURRENT_PUTS = 8  # below botocore's default connection pool size (10)

# (bucket, key, body, content type)
Put = tuple[str, str, bytes, str]


class ObjectStore:
    """S3, through a boto3 client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        """Store the object unless the key exists; True when this call wrote it."""
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                                    IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "PreconditionFailed":
                return False
            raise StoreError(f"cannot write s3://{bucket}/{key}: {code} {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot write s3://{bucket}/{key}: {exc}") from exc
        return True

    def put_all(self, puts: Sequence[Put]) -> None:
        """:meth:`put_new` every object, concurrently; the first StoreError is raised once all
        puts have ended (a retry of the batch writes only what is missing)."""
        if not puts:
            return
        if len(puts) == 1:  # most steps of a small batch: no thread to start
            self.put_new(*puts[0])
            return
        with ThreadPoolExecutor(min(len(puts), MAX_CONCURRENT_PUTS)) as pool:
            for _ in pool.map(lambda put: self.put_new(*put), puts):
                pass


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
        return partition.key(config.raw_prefix, batch, ".avro")

    files = batch_files(parsed.events, raw_key, batch)
    raw = [(config.raw_bucket, raw_key(f.partition), f.avro, "application/avro") for f in files]
    store.put_all(raw)
    processed = [(config.processed_bucket,
                  f.partition.key(config.processed_prefix, batch, config.processed_suffix),
                  f.parquet, "application/vnd.apache.parquet") for f in files]
    store.put_all(processed)
    return BatchResult(sum(f.events for f in files), tuple(put[1] for put in raw),
                       tuple(put[1] for put in processed), tuple(put[1] for put in dead_letters))

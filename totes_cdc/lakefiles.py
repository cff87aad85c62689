"""The lake's files and how they are stored: object keys, the raw zone's Avro container, conditional puts.

Two writers fill the lake: the stream processor (a Kinesis batch's events) and capture (a
snapshot's ranges). Both name files with :meth:`Partition.key`, write the raw zone's Avro container
of contract records and the processed zone's Parquet (contract.parquet_schema), and store them with
:meth:`ObjectStore.put_new`, a conditional put (``If-None-Match: *``): objects are immutable, and
writing the same key again (a retried batch, a re-read range) writes nothing and notifies nobody.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import fastavro
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError
from isal import isal_zlib

from totes_cdc import contract
from totes_cdc.errors import TransientError
from totes_cdc.settings import settings

AVRO_CONTENT_TYPE = "application/avro"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class StoreError(TransientError):
    """S3 refused or failed a request; retrying may succeed."""


@dataclass(frozen=True)
class LakeLocation:
    """Where the two zones are: buckets, key prefixes, the processed files' suffix (the S3 -> SQS
    notification filters on the processed prefix and suffix)."""

    raw_bucket: str
    raw_prefix: str
    processed_bucket: str
    processed_prefix: str
    processed_suffix: str

    @classmethod
    def from_settings(cls) -> LakeLocation:
        cfg = settings()
        return cls(cfg["buckets"]["raw"], cfg["prefixes"]["raw"], cfg["buckets"]["processed"],
                   cfg["prefixes"]["processed"], cfg["suffixes"]["processed"])


class Named(Protocol):
    """What a file is named after: a delivered batch, a snapshot range."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Partition:
    """Events of one table committed on one (UTC) date: one raw file and one processed file."""

    schema: str
    table: str
    date: dt.date

    def key(self, prefix: str, batch: Named, suffix: str) -> str:
        return f"{prefix}{self.schema}.{self.table}/date={self.date.isoformat()}/{batch.name}{suffix}"


# The raw zone's blocks are deflated by ISA-L (isal), in the format of zlib's deflate, which every
# Avro reader inflates: on 100,000 snapshot records of sales_order (69 MB) its level 1 took 77 ms
# of CPU against zlib level 1's 213 ms, for the same size (7.28 against 7.34 MB). zlib's default
# level 6 had been a quarter of the stream processor's CPU on large batches. Each call to ISA-L's
# level 1 sets up its own tables, so the blocks are large: 256,000 bytes, within what Avro's writers
# suggest (2 KB to 2 MB; Java's default is 64,000, fastavro's 16,000). On 100,000 records of
# sales_order: 22 ms and 2.58 MB, against 36 ms and 2.78 MB in blocks of 64,000 bytes and 86 ms and
# 3.7 MB in blocks of 16,000. Blocks of 1,000,000 bytes took 18 ms for 2.53 MB, but the snapshot
# joins its bodies 4 MB at a time and joins again the records after a part's last whole block.
DEFLATE_LEVEL = 1


def sync_marker(key: str) -> bytes:
    return hashlib.md5(key.encode(), usedforsecurity=False).digest()


def avro_file(records: Sequence[dict[str, Any]], key: str) -> bytes:
    """An Avro object container file of the records, byte-identical for the same key and records."""
    buf = io.BytesIO()
    sizes = []
    for record in records:
        start = buf.tell()
        fastavro.schemaless_writer(buf, contract.PARSED_SCHEMA, record)
        sizes.append(buf.tell() - start)
    return avro_container(buf.getbuffer(), np.array(sizes, np.int64), key)


def _avro_header() -> bytes:
    """The container header fastavro writes for the contract schema and deflate, less its sync marker."""
    buf = io.BytesIO()
    fastavro.writer(buf, contract.PARSED_SCHEMA, [], codec="deflate", sync_marker=bytes(16))
    return buf.getvalue()[:-16]


_AVRO_HEADER = _avro_header()
_SYNC_INTERVAL = 256_000


# A block: its record count and size (Avro longs), then its records' bodies deflated.
Block = tuple[bytes, bytes]


def avro_blocks(data: bytes | memoryview, sizes: npt.NDArray[np.int64], *,
                final: bool = True) -> tuple[list[Block], int]:
    """The container blocks of the record bodies laid end to end in ``data`` (``sizes`` each), and
    how many records they hold; a block ends after the record that takes it to _SYNC_INTERVAL
    bytes. Unless ``final``, the records after the last block so ended are left for the next call
    (which starts with them), so bodies given a part at a time make the same blocks as given whole."""
    cumulative = np.cumsum(sizes)
    ends = cumulative.tolist()
    blocks = []
    first = 0
    while first < len(ends):
        base = ends[first - 1] if first else 0
        last = int(np.searchsorted(cumulative, base + _SYNC_INTERVAL))
        if last >= len(ends):
            if not final:
                break
            last = len(ends) - 1
        block = isal_zlib.compress(data[base:ends[last]], DEFLATE_LEVEL, wbits=-15)  # raw deflate
        blocks.append((contract.avro_long(last + 1 - first) + contract.avro_long(len(block)), block))
        first = last + 1
    return blocks, first


def avro_container_of(blocks: Sequence[Block], key: str) -> bytes:
    """The Avro container file of ``blocks``, with the sync marker of ``key``."""
    sync = sync_marker(key)
    return b"".join([_AVRO_HEADER, sync, *(part for head, block in blocks for part in (head, block, sync))])


def avro_container(data: bytes | memoryview, sizes: npt.NDArray[np.int64], key: str) -> bytes:
    """The Avro container file of the record bodies laid end to end in ``data`` (``sizes`` each),
    without decoding them."""
    return avro_container_of(avro_blocks(data, sizes)[0], key)


def avro_events(container: bytes) -> list[contract.ChangeEvent]:
    """The events of a raw-zone Avro container."""
    return [contract.from_record(r) for r in fastavro.reader(io.BytesIO(container)) if isinstance(r, dict)]


# A column's dictionary stops at 16 KiB and the rest of it is written plain: a column of a few
# distinct values keeps its dictionary, a column of unique values (keys, timestamps, amounts) stops
# building one early. Arrow's default (1 MiB) dictionary-encodes 100,000 unique values whole, which
# is larger than plain: with 16 KiB, 100,000 snapshot rows of sales_order took 21-26 ms to write
# instead of 36-54 and 2.46 MB instead of 3.45, and each totesys table's file is 0-19 % smaller.
_DICTIONARY_LIMIT = 16_384


def parquet_bytes(table: pa.Table) -> bytes:
    """A processed file's bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, dictionary_pagesize_limit=_DICTIONARY_LIMIT)
    return buf.getvalue()


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

    def keys(self, bucket: str, prefix: str) -> list[str]:
        """The keys under ``prefix``."""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot list s3://{bucket}/{prefix}: {exc}") from exc

    def get(self, bucket: str, key: str) -> bytes:
        try:
            body: bytes = self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        return body

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

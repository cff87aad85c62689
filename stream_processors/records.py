"""Kinesis record bytes to typed change events: de-aggregate, decode, type the values. No I/O.

Anything that fails here is data, not infrastructure: it becomes a :class:`Poison` (what, where,
why) for the dead-letter location, and the rest of the record and batch carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from totes_cdc import contract, kpl
from totes_cdc.contract import ChangeEvent, ContractError
from totes_cdc.textcolumns import value_parser


@dataclass(frozen=True)
class TypedEvent:
    """One decoded change event, with its row image typed for Parquet."""

    record: dict[str, Any]  # the Avro record exactly as received (what the raw zone stores)
    event: ChangeEvent
    row: dict[str, Any]  # column -> typed value of the image the processed row holds


@dataclass(frozen=True)
class Poison:
    """A user record (or a whole Kinesis record) that cannot be turned into an event."""

    sequence_number: str
    sub_sequence: int | None  # position inside an aggregated record; None: the record as a whole
    partition_key: str
    data: bytes
    error: str


@dataclass(frozen=True)
class ParsedRecord:
    """What one Kinesis record held: its good events and its poison user records, in order."""

    sequence_number: str
    events: tuple[TypedEvent, ...]
    poison: tuple[Poison, ...]


def row_image(event: ChangeEvent) -> Mapping[str, str | None]:
    """The image a processed row holds: ``after`` for r/c/u, ``before`` for d, none for t."""
    image = event.before if event.op == contract.OP_DELETE else event.after
    return image or {}


def typed_row(event: ChangeEvent) -> dict[str, Any]:
    types = {c.name: c.type for c in event.columns}
    row: dict[str, Any] = {}
    for name, text in row_image(event).items():
        pg_type = types.get(name)
        if pg_type is None:  # untypeable; as text it would fail the file where the column is typed
            raise ContractError(f"{event.schema}.{event.table} lsn {event.lsn} seq {event.seq}: "
                                f"column {name} is not among the event's columns")
        try:
            row[name] = None if text is None else value_parser(pg_type)(text)
        except (ValueError, ArithmeticError) as exc:
            raise ContractError(f"{event.schema}.{event.table} lsn {event.lsn} seq {event.seq}: "
                                f"column {name} ({pg_type}) value {text!r}: {exc}") from exc
    return row


def typed_event(data: bytes) -> TypedEvent:
    """Decode and type one user record; ContractError when it is poison."""
    record = contract.decode_record(data)
    event = contract.from_record(record)
    return TypedEvent(record, event, typed_row(event))


def parse_record(data: bytes, partition_key: str, sequence_number: str) -> ParsedRecord:
    """De-aggregate one Kinesis record and type every user record in it."""
    try:
        user_records = kpl.deaggregate(data, partition_key)
    except (kpl.AggregationError, UnicodeDecodeError) as exc:
        poison = Poison(sequence_number, None, partition_key, data, f"cannot de-aggregate: {exc}")
        return ParsedRecord(sequence_number, (), (poison,))
    events: list[TypedEvent] = []
    poisons: list[Poison] = []
    for index, (key, payload) in enumerate(user_records):
        try:
            events.append(typed_event(payload))
        except ContractError as exc:
            poisons.append(Poison(sequence_number, index, key, payload, str(exc)))
    return ParsedRecord(sequence_number, tuple(events), tuple(poisons))

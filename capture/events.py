"""pgoutput messages → contract change events.

Relation messages describe a table's current columns; the builder keeps one shape per relation id
and replaces it whenever a new Relation message arrives (a column added or dropped at the source
gives the next events their new shape, with no restart). Column types are named by the source
(``format_type``), the key is the table's primary key (or, without one, its replica identity).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from capture.decoder import UNCHANGED, Begin, Delete, Insert, Relation, Truncate, Update, Value
from capture.errors import CaptureError
from totes_cdc.contract import (
    OP_DELETE,
    OP_INSERT,
    OP_TRUNCATE,
    OP_UPDATE,
    ChangeEvent,
    Column,
    partition_key,
)

log = logging.getLogger(__name__)


class Catalog(Protocol):
    def describe(self, relation: Relation) -> tuple[list[str], list[str] | None]:
        """Type names of the relation's columns (in order), and its primary-key column names
        (None when it has no primary key)."""


@dataclass(frozen=True)
class TableShape:
    """What the builder needs to turn a tuple into an event, fixed per Relation message."""

    schema: str
    table: str
    columns: tuple[Column, ...]
    names: tuple[str, ...]
    key_positions: tuple[int, ...]
    identity_positions: tuple[int, ...]


def shape_of(relation: Relation, type_names: Sequence[str], primary_key: Sequence[str] | None) -> TableShape:
    """The shape of a relation; the key is its primary key, else its replica identity columns."""
    names = tuple(c.name for c in relation.columns)
    identity = tuple(i for i, c in enumerate(relation.columns) if c.key)
    keys = identity if primary_key is None else tuple(i for i, n in enumerate(names) if n in primary_key)
    if primary_key is None:
        log.warning(
            "table %s.%s has no primary key: its events are keyed on its replica identity (%s); "
            "per-row order across updates is only kept when that identity does not change",
            relation.namespace, relation.name, "FULL" if relation.replica_identity == "f"
            else "none" if not identity else ", ".join(names[i] for i in identity))
    columns = tuple(Column(n, t, i in keys) for i, (n, t) in enumerate(zip(names, type_names, strict=True)))
    return TableShape(relation.namespace, relation.name, columns, names, keys, identity)


class EventBuilder:
    """Turns the messages of one replication session into change events, in order."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._shapes: dict[int, TableShape] = {}
        self._lsn = 0
        self._commit_ts = dt.datetime.min
        self._xid: int | None = None
        self._seq = 0

    def relation(self, message: Relation) -> None:
        type_names, primary_key = self._catalog.describe(message)
        self._shapes[message.relation_id] = shape_of(message, type_names, primary_key)

    def begin(self, message: Begin) -> None:
        # lsn = where the commit record starts (the Commit's commit_lsn, not its end_lsn); seq from
        # 1 (see contract.SEQ_RANGE: snapshot reads at the same lsn sort before).
        self._lsn, self._commit_ts, self._xid, self._seq = (
            message.final_lsn, message.commit_ts, message.xid, 0)

    def _shape(self, relation_id: int) -> TableShape:
        try:
            return self._shapes[relation_id]
        except KeyError:
            raise CaptureError(f"change for relation {relation_id} arrived before its Relation message "
                               f"(transaction at LSN {self._lsn:X})") from None

    def _event(self, op: str, shape: TableShape, before: dict[str, str | None] | None,
               after: dict[str, str | None] | None, unchanged: tuple[str, ...]) -> ChangeEvent:
        self._seq += 1
        return ChangeEvent(op, shape.schema, shape.table, self._lsn, self._seq, self._commit_ts,
                           shape.columns, before, after, self._xid, False, unchanged)

    def change(self, message: Insert | Update | Delete) -> tuple[ChangeEvent, str]:
        """The event for an insert, update or delete, and its Kinesis partition key."""
        shape = self._shape(message.relation_id)
        if isinstance(message, Insert):
            after, unchanged = _image(shape, message.new)
            event = self._event(OP_INSERT, shape, None, after, unchanged)
            key = [after.get(shape.names[i]) for i in shape.key_positions]
        elif isinstance(message, Update):
            after, unchanged = _image(shape, message.new)
            before = None if message.old is None else _old_image(shape, message.old, message.old_kind)
            event = self._event(OP_UPDATE, shape, before, after, unchanged)
            key = [after.get(shape.names[i]) for i in shape.key_positions]
        else:
            before = _old_image(shape, message.old, message.old_kind)
            event = self._event(OP_DELETE, shape, before, None, ())
            key = [before.get(shape.names[i]) for i in shape.key_positions]
        return event, partition_key(shape.schema, shape.table, key)

    def truncate(self, message: Truncate) -> list[tuple[ChangeEvent, str]]:
        """One truncate event per table (keyed on the table alone)."""
        events = []
        for relation_id in message.relation_ids:
            shape = self._shape(relation_id)
            events.append((self._event(OP_TRUNCATE, shape, None, None, ()),
                           partition_key(shape.schema, shape.table, ())))
        return events


def _text(value: Value, shape: TableShape) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise CaptureError(f"binary-format value in {shape.schema}.{shape.table}: capture asks for text "
                       "values only (replication option binary must be off)")


def _image(shape: TableShape, values: Sequence[Value]) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """Column name → text value; TOAST-unchanged columns are left out and listed separately."""
    if len(values) != len(shape.names):
        raise CaptureError(f"tuple of {len(values)} values for {shape.schema}.{shape.table}, "
                           f"whose Relation message has {len(shape.names)} columns")
    if UNCHANGED not in values:
        return {n: _text(v, shape) for n, v in zip(shape.names, values, strict=True)}, ()
    image: dict[str, str | None] = {}
    unchanged = []
    for name, value in zip(shape.names, values, strict=True):
        if value is UNCHANGED:
            unchanged.append(name)
        else:
            image[name] = _text(value, shape)
    return image, tuple(unchanged)


def _old_image(shape: TableShape, values: Sequence[Value], kind: str | None) -> dict[str, str | None]:
    """The old row: its replica identity columns ('K'), or every column ('O', REPLICA IDENTITY FULL)."""
    image, _ = _image(shape, values)
    if kind == "K":
        return {shape.names[i]: image.get(shape.names[i]) for i in shape.identity_positions}
    return image

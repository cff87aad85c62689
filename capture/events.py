"""pgoutput messages → contract change events.

Relation messages describe a table's current columns; the builder keeps one shape per relation id
and replaces it whenever a new Relation message arrives (a column added or dropped at the source
gives the next events their new shape, with no restart). Column types are named by the source
(``format_type``), the key is the table's primary key (or, without one, its replica identity).

An update that changes the key becomes two events at consecutive positions of its transaction: the
delete of the old key (partitioned on it, so it follows the old key's history on its shard), then
the insert of the new key (partitioned on the new key, whose first version it is). See
:meth:`EventBuilder.change` and docs/capture.md, "Positions".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

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
    key_names: tuple[str, ...]
    table_prefix: str  # "schema.table/": a one-column key's partition key, before its value


def shape_of(relation: Relation, type_names: Sequence[str], primary_key: Sequence[str] | None) -> TableShape:
    """The shape of a relation; the key is its primary key, else its replica identity columns."""
    names = tuple(c.name for c in relation.columns)
    identity = tuple(i for i, c in enumerate(relation.columns) if c.key)
    keys = identity if primary_key is None else tuple(i for i, n in enumerate(names) if n in primary_key)
    if primary_key is None:
        log.warning(
            "table %s.%s has no primary key: its events are keyed on its replica identity (%s); "
            "an update that changes it is sent as the delete of the old and the insert of the new",
            relation.namespace, relation.name, "FULL" if relation.replica_identity == "f"
            else "none" if not identity else ", ".join(names[i] for i in identity))
    columns = tuple(Column(n, t, i in keys) for i, (n, t) in enumerate(zip(names, type_names, strict=True)))
    return TableShape(relation.namespace, relation.name, columns, names, keys, identity,
                      tuple(names[i] for i in keys), f"{relation.namespace}.{relation.name}/")


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

    def change(self, message: Insert | Update | Delete) -> list[tuple[ChangeEvent, str]]:
        """The events for an insert, update or delete, each with its Kinesis partition key.

        One event, or two for an update whose old image shows another key: the delete of the old
        key (``before`` = the old image as sent), then the insert (``c``) of the new key. An insert,
        because the new key has no live earlier version for it to update (the key is unique), so
        every consumer, applying a key's versions in order, starts the new key's history there. A
        TOAST-unchanged column of the new row takes its value from the old image when that holds it
        (REPLICA IDENTITY FULL, whose old row PostgreSQL sends with its TOASTed values inlined);
        with the old key alone it stays listed in ``unchanged``: its value is the old key's as of
        the delete, the event at ``seq - 1``.
        """
        shape = self._shape(message.relation_id)
        if isinstance(message, Insert):
            after, unchanged = _image(shape, message.new)
            return [(self._event(OP_INSERT, shape, None, after, unchanged), _partition(shape, after))]
        if isinstance(message, Delete):
            before = _old_image(shape, message.old, message.old_kind)
            return [(self._event(OP_DELETE, shape, before, None, ()), _partition(shape, before))]
        after, unchanged = _image(shape, message.new)
        old = None if message.old is None else _old_image(shape, message.old, message.old_kind)
        if old is None or not _moved(shape, old, after):
            return [(self._event(OP_UPDATE, shape, old, after, unchanged), _partition(shape, after))]
        gone = self._event(OP_DELETE, shape, old, None, ())
        if unchanged:
            after = {n: after[n] if n in after else old[n] for n in shape.names if n in after or n in old}
            unchanged = tuple(n for n in unchanged if n not in old)
        moved = self._event(OP_INSERT, shape, None, after, unchanged)
        return [(gone, _partition(shape, old)), (moved, _partition(shape, after))]

    def truncate(self, message: Truncate) -> list[tuple[ChangeEvent, str]]:
        """One truncate event per table (keyed on the table alone)."""
        events = []
        for relation_id in message.relation_ids:
            shape = self._shape(relation_id)
            events.append((self._event(OP_TRUNCATE, shape, None, None, ()),
                           partition_key(shape.schema, shape.table, ())))
        return events


def _partition(shape: TableShape, image: dict[str, str | None]) -> str:
    if len(shape.key_names) == 1:  # contract.partition_key, without its per-call formatting
        value = image.get(shape.key_names[0])
        return (shape.table_prefix + value)[:256] if value else shape.table_prefix[:256]
    return partition_key(shape.schema, shape.table, [image.get(n) for n in shape.key_names])


def _moved(shape: TableShape, before: dict[str, str | None], after: dict[str, str | None]) -> bool:
    """Whether the images hold different keys. An old image without the key (REPLICA IDENTITY USING
    INDEX on other columns than the primary key) cannot show a change: the update stays one event."""
    names = [shape.names[i] for i in shape.key_positions]
    return (all(n in before and n in after for n in names)
            and any(before[n] != after[n] for n in names))


_TEXT = frozenset((str, type(None)))


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
    if _TEXT.issuperset(map(type, values)):  # the usual case, checked in one pass over the values
        return dict(zip(shape.names, cast("Sequence[str | None]", values), strict=True)), ()
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

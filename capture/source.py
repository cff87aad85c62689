"""The source database, as capture uses it: checks, publication, slots, catalog, heartbeats.

Two kinds of connection: a normal one (catalog queries, heartbeats, snapshot reads) and a
replication one (slot creation with an exported snapshot, the change stream). Every session sets
DateStyle ISO and TimeZone UTC, so snapshot reads and the stream print values the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg2.extras
from psycopg2 import sql

from capture.decoder import Relation
from totes_cdc import db
from totes_cdc.errors import ConfigError

log = logging.getLogger(__name__)

SESSION_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=1"
HEARTBEAT_PREFIX = "totes_cdc_heartbeat"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return int(high, 16) << 32 | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def qualified(table: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` (schema public) as (schema, table)."""
    schema, _, name = table.rpartition(".")
    return schema or "public", name


def connect(dsn: str) -> Any:
    conn = db.connect(dsn, "source", options=SESSION_OPTIONS)
    conn.autocommit = True
    return conn


def connect_replication(dsn: str) -> Any:
    return db.connect(dsn, "source", options=SESSION_OPTIONS,
                      connection_factory=psycopg2.extras.LogicalReplicationConnection)


def tables_not_found(tables: Sequence[str]) -> ConfigError:
    """The error for captured tables the source does not have: a setting to fix (exit 2)."""
    return ConfigError(f"tables not found in the source database: {', '.join(tables)}")


class Source:
    """Queries on a normal (autocommit) connection to the source."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._types: dict[tuple[int, int], str] = {}

    def _one(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            row = cur.fetchone()
            return None if row is None else row[0]

    def _execute(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> None:
        with self.conn.cursor() as cur:
            cur.execute(query, params)

    def check(self, tables: Sequence[str]) -> None:
        """ConfigError unless the server does logical decoding and every table exists."""
        db.require_logical_decoding(self.conn)
        missing = [t for t in tables if self._one("SELECT to_regclass(%s)", (
            sql.Identifier(*qualified(t)).as_string(self.conn),)) is None]
        if missing:
            raise tables_not_found(missing)

    def oldest_open_transaction(self) -> str | None:
        """The oldest transaction open on the server with a transaction id (what a new slot waits
        for), described for a log line; None when there is none."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT pid, datname, round(extract(epoch FROM now() - xact_start)), state, "
                        "left(regexp_replace(query, '\\s+', ' ', 'g'), 80) FROM pg_stat_activity "
                        "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
                        "ORDER BY xact_start LIMIT 1")
            row = cur.fetchone()
        if row is None:
            return None
        pid, database, seconds, state, statement = row
        return f"pid {pid} in {database}, open {seconds:.0f} s, {state}: {statement}"

    def published(self, name: str) -> set[tuple[str, str]] | None:
        """The (schema, table) pairs of publication ``name``; None when there is no such publication."""
        if self._one("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)) is None:
            return None
        with self.conn.cursor() as cur:
            cur.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                        (name,))
            return {(s, t) for s, t in cur.fetchall()}

    def ensure_publication(self, name: str, tables: Sequence[str]) -> None:
        """Create the publication for ``tables``, or add the ones it lacks."""
        idents = [sql.Identifier(*qualified(t)) for t in tables]
        present = self.published(name)
        if present is None:
            self._execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(name), sql.SQL(", ").join(idents)))
            log.info("created publication %s for %d tables", name, len(tables))
            return
        for table in tables:
            if qualified(table) not in present:
                self._execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(name), sql.Identifier(*qualified(table))))
                log.info("added %s to publication %s", table, name)

    def slot_position(self, slot: str) -> int | None:
        """The slot's confirmed flush LSN; None when this database has no such slot."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT confirmed_flush_lsn::text, plugin FROM pg_replication_slots "
                        "WHERE slot_name = %s AND database = current_database()", (slot,))
            row = cur.fetchone()
        if row is None:
            return None
        if row[1] != "pgoutput":
            raise ConfigError(f"replication slot {slot} uses plugin {row[1]}, not pgoutput: "
                              "choose another --slot or drop it")
        return parse_lsn(row[0])

    def slot_lag_bytes(self, slot: str) -> int | None:
        lag: int | None = self._one(db.SLOT_LAG_BYTES_SQL, (slot,))
        return lag

    def heartbeat(self) -> None:
        """A non-transactional logical message: moves the slot on when captured tables are quiet."""
        self._one("SELECT pg_logical_emit_message(false, %s, now()::text)", (HEARTBEAT_PREFIX,))

    def describe(self, relation: Relation) -> tuple[list[str], list[str] | None]:
        """Column type names (``format_type``) and primary-key columns of a Relation message."""
        missing = [(c.type_oid, c.type_modifier) for c in relation.columns
                   if (c.type_oid, c.type_modifier) not in self._types]
        if missing:
            with self.conn.cursor() as cur:
                cur.execute("SELECT o, m, format_type(o, m) FROM unnest(%s::oid[], %s::int[]) AS u(o, m)",
                            ([o for o, _ in missing], [m for _, m in missing]))
                for oid, mod, name in cur.fetchall():
                    self._types[(oid, mod)] = name
        types = [self._types[(c.type_oid, c.type_modifier)] for c in relation.columns]
        with self.conn.cursor() as cur:
            return types, primary_key(cur, relation.relation_id)



def table_columns(cur: Any, table: str) -> tuple[list[tuple[str, str, int]], list[str] | None]:
    """(name, type name, type oid) of a table's columns, and its primary key, seen through ``cur``.

    Generated columns are left out: pgoutput sends none (PostgreSQL 15 to 17), and a snapshot read
    has the columns of the table's stream events."""
    ident = sql.Identifier(*qualified(table)).as_string(cur)
    cur.execute("SELECT attname, format_type(atttypid, atttypmod), atttypid FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "AND attgenerated = '' ORDER BY attnum",
                (ident,))
    columns = [(n, t, o) for n, t, o in cur.fetchall()]
    cur.execute("SELECT %s::regclass::oid", (ident,))
    return columns, primary_key(cur, cur.fetchone()[0])


def primary_key(cur: Any, relation_id: int) -> list[str] | None:
    """The primary-key column names of a table, in key order; None without a primary key."""
    cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)", (relation_id,))
    names = [r[0] for r in cur.fetchall()]
    return names or None


def create_slot(repl_conn: Any, slot: str, temporary: bool = False) -> tuple[int, str]:
    """CREATE_REPLICATION_SLOT with an exported snapshot: (consistent point, snapshot name).

    The snapshot stays usable only while ``repl_conn`` runs no other command: keep it idle until
    the snapshot has been read.
    """
    with repl_conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput EXPORT_SNAPSHOT").format(
            sql.Identifier(slot), sql.SQL("TEMPORARY" if temporary else "")).as_string(repl_conn))
        _, point, snapshot_name, _ = cur.fetchone()
    return parse_lsn(point), snapshot_name

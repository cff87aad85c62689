"""The change stream: a logical replication connection driven over libpq, whose feedback capture owns.

START_REPLICATION puts the connection in COPY BOTH mode: the server sends XLogData messages (``w``:
data start, WAL end, send time, then one pgoutput message) and keepalives (``k``: WAL end, send
time, whether a reply is wanted); the client sends standby status updates (``r``: written, flushed
and applied positions, send time). The slot's confirmed position is the flushed position of those
updates and nothing else, so :meth:`ReplicationStream.send_status` is the only way it moves.

This is why capture does not use psycopg2's replication cursor: on a keepalive it moves its
flush position to the keepalive's WAL end by itself whenever what was last flushed explicitly
covers the last message's data start. With pgoutput, the BEGIN and first changes of a transaction
that began before the last acknowledged commit start below it, so a keepalive read then confirmed
every transaction committed meanwhile, even those whose events had not reached Kinesis.

Reads never block: :meth:`ReplicationStream.read` returns None when no whole message has arrived,
and :meth:`ReplicationStream.wait` waits on the socket, so the capture loop keeps its own clock.
"""

from __future__ import annotations

import re
import select
import struct
import time
from dataclasses import dataclass

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo
from psycopg.pq.abc import PGresult

from capture.errors import CaptureError
from totes_cdc import db
from totes_cdc.errors import ConfigError, DatabaseError, DatabaseUnavailable

_XLOG_DATA = ord("w")
_KEEPALIVE = ord("k")
_XLOG_HEADER = 1 + 8 + 8 + 8
_KEEPALIVE_BODY = struct.Struct(">QQB")
_STATUS = struct.Struct(">QQQQB")
_POSTGRES_EPOCH = 946_684_800  # 2000-01-01 in Unix time: the protocol's clock starts there
_DURATION = re.compile(r"(\d+)\s*(ms|s|min|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Keepalive:
    wal_end: int
    reply_requested: bool


class ReplicationStream:
    """One replication connection to the source (``replication=database``)."""

    def __init__(self, dsn: str, options: str) -> None:
        self._what = f"the replication connection to {db.describe(dsn)}"
        self._conn = pq.PGconn.connect(make_conninfo(
            dsn, replication="database", options=options, connect_timeout=10).encode())
        if self._conn.status != pq.ConnStatus.OK:
            message = self._conn.get_error_message()
            self._conn.finish()
            problem = f"cannot open {self._what}: {_first_line(message)}"
            raise (ConfigError(problem) if db.refused_for_good(message) else DatabaseUnavailable(problem))
        self._get_copy_data = self._conn.get_copy_data  # bound once: read() runs per message

    def wal_sender_timeout(self) -> float:
        """The server's ``wal_sender_timeout`` for this connection, in seconds (0: none)."""
        result = self._conn.exec_(b"SHOW wal_sender_timeout")
        self._check(result, pq.ExecStatus.TUPLES_OK, "SHOW wal_sender_timeout")
        value = (result.get_value(0, 0) or b"0").decode()
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise CaptureError(f"cannot read wal_sender_timeout {value!r}")
        return int(match[1]) * _UNIT_SECONDS[match[2] or "ms"]

    def start(self, slot: str, lsn: int, options: dict[str, str]) -> None:
        """START_REPLICATION of ``slot`` from ``lsn`` with pgoutput ``options``."""
        # Replication commands take no parameters: option values are quoted as SQL literals.
        quoted = ", ".join(f"{name} '{value.replace(chr(39), chr(39) * 2)}'"
                           for name, value in options.items())
        command = f"START_REPLICATION SLOT {slot} LOGICAL {lsn >> 32:X}/{lsn & 0xFFFFFFFF:X} ({quoted})"
        try:
            self._conn.send_query(command.encode())
            result = self._conn.get_result()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"{self._what} broke: {_first_line(str(exc))}") from None
        if result is None:
            raise DatabaseUnavailable(f"{self._what} broke: {_first_line(self._conn.get_error_message())}")
        self._check(result, pq.ExecStatus.COPY_BOTH, f"START_REPLICATION of slot {slot}")

    def read(self) -> bytes | Keepalive | None:
        """The next pgoutput message, or a keepalive; None when no whole message has arrived."""
        try:
            size, data = self._get_copy_data(1)
            if size == 0:
                self._conn.consume_input()
                size, data = self._get_copy_data(1)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"{self._what} broke: {_first_line(str(exc))}") from None
        if size > 0:
            kind = data[0]
            if kind == _XLOG_DATA:
                return data[_XLOG_HEADER:].tobytes()  # one copy, not bytes() of a view's slice
            if kind == _KEEPALIVE:
                wal_end, _, reply = _KEEPALIVE_BODY.unpack_from(data, 1)
                return Keepalive(wal_end, bool(reply))
            raise CaptureError(f"unexpected replication message type {chr(kind)!r}")
        if size == 0:
            return None
        # The server ended the stream: its result says why (shutdown, slot dropped...).
        result = self._conn.get_result()
        if result is not None:
            self._check(result, pq.ExecStatus.COMMAND_OK, "the replication stream")
        raise DatabaseUnavailable(f"{self._what} ended the stream")

    def send_status(self, lsn: int) -> None:
        """A standby status update reporting ``lsn`` written, flushed and applied: the slot may
        forget everything before it."""
        clock = int((time.time() - _POSTGRES_EPOCH) * 1_000_000)
        try:
            self._conn.put_copy_data(b"r" + _STATUS.pack(lsn, lsn, lsn, clock, 0))
            self._conn.flush()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"{self._what} broke: {_first_line(str(exc))}") from None

    def wait(self, timeout: float) -> None:
        """Until the server sends something, or ``timeout`` seconds."""
        select.select([self._conn.socket], [], [], max(0.0, timeout))

    def close(self) -> None:
        self._conn.finish()

    def _check(self, result: PGresult, expected: pq.ExecStatus, doing: str) -> None:
        if result.status == expected:
            return
        raw = result.error_field(pq.DiagnosticField.SQLSTATE)
        sqlstate = raw.decode() if raw else None
        message = _first_line(result.get_error_message() or self._conn.get_error_message())
        problem: DatabaseError | DatabaseUnavailable = db.error(sqlstate, f"{doing}: {message}")
        raise problem


def _first_line(message: bytes | str) -> str:
    text = (message.decode(errors="replace") if isinstance(message, bytes) else message).strip()
    return text.splitlines()[0] if text else "no message from the server"

"""Connecting to the source and the warehouse: one place that turns driver errors into ours.

DSNs are libpq connection strings or URIs; TLS is whatever ``sslmode`` they carry (``require``,
``verify-full`` with ``sslrootcert`` ...). A DSN is never logged whole: :func:`describe` names the
server without the password.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions

from totes_cdc.errors import ConfigError


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` of a DSN, for messages (never the password)."""
    try:
        p = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "<unparseable DSN>"
    return (f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}"
            f"/{p.get('dbname', '')}")


def connect(dsn: str, what: str, **kwargs: Any) -> Any:
    """A psycopg2 connection; ConfigError naming ``what`` and the server when it cannot be had."""
    try:
        psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise ConfigError(f"the {what} DSN is not a valid connection string: {exc}") from None
    try:
        return psycopg2.connect(dsn, connect_timeout=kwargs.pop("connect_timeout", 10), **kwargs)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot connect to the {what} database {describe(dsn)}: {reason}") from None


def require_logical_decoding(conn: Any) -> None:
    """ConfigError saying exactly what to change when the source cannot do logical decoding."""
    with conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        level = cur.fetchone()[0]
    if level != "logical":
        raise ConfigError(
            f"the source database {describe(conn.dsn)} has wal_level = {level}; set wal_level = "
            "logical in postgresql.conf (on RDS: rds.logical_replication = 1) and restart the server")

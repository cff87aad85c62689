"""Connecting to the source and the warehouse, and the one place that classifies database errors.

DSNs are libpq connection strings or URIs; TLS is whatever ``sslmode`` they carry (``require``,
``verify-full`` with ``sslrootcert`` ...). A DSN is never logged whole: :func:`describe` names the
server without the password.

Every database error becomes one of two kinds by its SQLSTATE: :class:`DatabaseUnavailable`
(retry later: the server restarts, fails over, runs out of connections, a deadlock) or a terminal
:class:`DatabaseError` (a missing table, bad data, no privilege: retrying cannot help). An error
without SQLSTATE comes from the client side (the connection broke) and is transient, but for a
connection the server refused for good (:func:`refused_for_good`: wrong credentials, say).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg2
import psycopg2.extensions

from totes_cdc.errors import ConfigError, DatabaseError, DatabaseUnavailable, first_line

# Every SQLSTATE class of PostgreSQL (Appendix A) → whether retrying later may succeed.
SQLSTATE_CLASSES: dict[str, bool] = {
    "00": False,  # successful completion (never raised)
    "01": False,  # warning (never raised)
    "02": False,  # no data (never raised)
    "03": False,  # SQL statement not yet complete
    "08": True,   # connection exception
    "09": False,  # triggered action exception
    "0A": False,  # feature not supported
    "0B": False,  # invalid transaction initiation
    "0F": False,  # locator exception
    "0L": False,  # invalid grantor
    "0P": False,  # invalid role specification
    "0Z": False,  # diagnostics exception
    "10": False,  # XQuery error
    "20": False,  # case not found
    "21": False,  # cardinality violation
    "22": False,  # data exception
    "23": False,  # integrity constraint violation
    "24": False,  # invalid cursor state
    "25": False,  # invalid transaction state
    "26": False,  # invalid SQL statement name
    "27": False,  # triggered data change violation
    "28": False,  # invalid authorization specification
    "2B": False,  # dependent privilege descriptors still exist
    "2D": False,  # invalid transaction termination
    "2F": False,  # SQL routine exception
    "34": False,  # invalid cursor name
    "38": False,  # external routine exception
    "39": False,  # external routine invocation exception
    "3B": False,  # savepoint exception
    "3D": False,  # invalid catalog name
    "3F": False,  # invalid schema name
    "40": True,   # transaction rollback (serialization failure, deadlock)
    "42": False,  # syntax error or access rule violation (undefined table, no privilege)
    "44": False,  # WITH CHECK OPTION violation
    "53": True,   # insufficient resources (too many connections, out of memory or disk)
    "54": False,  # program limit exceeded
    "55": False,  # object not in prerequisite state
    "57": True,   # operator intervention (shutdown, crash restart, cancel)
    "58": False,  # system error (I/O error, missing file)
    "72": False,  # snapshot failure
    "F0": False,  # configuration file error
    "HV": False,  # foreign data wrapper error
    "P0": False,  # PL/pgSQL error
    "XX": False,  # internal error
}
# Codes whose class says otherwise.
SQLSTATE_CODES: dict[str, bool] = {
    "55006": True,   # object in use: a replication slot still held by a walsender that is going away
    "55P03": True,   # lock not available
    "57P04": False,  # the database was dropped
}

# How far a replication slot trails the source's WAL, in bytes (NULL before its first confirmation);
# one parameter, the slot's name. Capture publishes it, ``status`` reads it.
SLOT_LAG_BYTES_SQL = ("SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
                      "FROM pg_replication_slots WHERE slot_name = %s")


# A server refuses a connection before any session exists, so libpq reports it without SQLSTATE.
# These refusals (matched on the server's and libpq's English text) stay until a setting changes:
# wrong password, no pg_hba.conf entry, an unknown role or database, a role without the privilege
# asked for, TLS the server or the certificate refuses. Every other failure to connect is transient.
_REFUSED_FOR_GOOD = re.compile(
    r"password authentication failed|no pg_hba\.conf entry|pg_hba\.conf rejects|"
    r"(role|database) \".*\" does not exist|permission denied for database|"
    r"must be superuser or replication role|does not support SSL|certificate verify failed|"
    r"root certificate file")


def refused_for_good(message: str) -> bool:
    """Whether a failure to connect (libpq's message) will recur until a setting is changed."""
    return _REFUSED_FOR_GOOD.search(message) is not None


def transient(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE may go away by retrying later."""
    if sqlstate is None:
        return True
    return SQLSTATE_CODES.get(sqlstate, SQLSTATE_CLASSES.get(sqlstate[:2], False))


def error(sqlstate: str | None, message: str) -> DatabaseError | DatabaseUnavailable:
    """The project's error for a database error with this SQLSTATE."""
    text = f"{message} (SQLSTATE {sqlstate})" if sqlstate else message
    return DatabaseUnavailable(text) if transient(sqlstate) else DatabaseError(text)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn psycopg2 errors raised inside into :func:`error`, naming ``what`` was being done."""
    try:
        yield
    except psycopg2.Error as exc:
        raise error(exc.pgcode, f"{what}: {first_line(exc)}") from exc


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` of a DSN, for messages (never the password)."""
    try:
        p = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "<unparseable DSN>"
    return (f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}"
            f"/{p.get('dbname', '')}")


def dsn_from_secret(secret: Mapping[str, Any], name: str) -> str:
    """The libpq DSN of database secret ``name`` (its JSON, RDS layout: ``host``, ``port`` (default
    5432), ``dbname``, ``username``, ``password``, ``sslmode`` (default ``require``)).

    ConfigError naming the missing field, never a value of the secret.
    """
    try:
        return str(psycopg2.extensions.make_dsn(
            host=secret["host"], port=str(secret.get("port", 5432)), dbname=secret["dbname"],
            user=secret["username"], password=secret["password"],
            sslmode=secret.get("sslmode", "require")))
    except KeyError as exc:
        raise ConfigError(f"the database secret {name!r} has no {exc.args[0]!r} field") from None


def dsn_from_secret_name(name: str, client: Any = None) -> str:
    """The DSN of the database whose Secrets Manager secret is ``name`` (:func:`dsn_from_secret`)."""
    import json

    import boto3
    import botocore.exceptions

    try:
        secret = json.loads((client or boto3.client("secretsmanager")).get_secret_value(
            SecretId=name)["SecretString"])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise ConfigError(f"cannot read the secret {name!r}: {exc}") from None
    except ValueError:
        raise ConfigError(f"the secret {name!r} is not JSON") from None
    return dsn_from_secret(secret, name)


def slot_lag_bytes(dsn: str, slot: str) -> int | None:
    """How far ``slot`` trails the source's WAL (None before its first confirmation); LookupError
    when there is no such slot."""
    conn = connect(dsn, "source", connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(SLOT_LAG_BYTES_SQL, (slot,))
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        raise LookupError(f"no replication slot {slot!r} yet")
    return None if row[0] is None else int(row[0])


def secret_from_dsn(dsn: str) -> dict[str, str]:
    """The secret JSON of a DSN, in the layout :func:`dsn_from_secret` reads back."""
    p = psycopg2.extensions.parse_dsn(dsn)
    return {"host": p.get("host", "localhost"), "port": p.get("port", "5432"),
            "dbname": p.get("dbname", ""), "username": p.get("user", ""),
            "password": p.get("password", ""), "sslmode": p.get("sslmode", "prefer")}


def _without_dsn_text(message: str, dsn: str) -> str:
    """libpq's parse error with every quoted piece of the DSN in it hidden: the piece may be the
    password (``invalid percent-encoded token: "s3cr%zzet"``)."""
    return re.sub(r'"([^"]{2,})"', lambda m: '"..."' if m.group(1) in dsn else m.group(0), message)


def connect(dsn: str, what: str, **kwargs: Any) -> Any:
    """A psycopg2 connection.

    ConfigError for a DSN that does not parse or a refusal that retrying cannot change (wrong
    credentials: a rotated password needs a restart that reads the secret again);
    DatabaseUnavailable (transient) when the server cannot be reached now.
    """
    try:
        psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise ConfigError(f"the {what} DSN is not a valid connection string: "
                          f"{_without_dsn_text(first_line(exc), dsn)}") from None
    try:
        return psycopg2.connect(dsn, connect_timeout=kwargs.pop("connect_timeout", 10), **kwargs)
    except psycopg2.OperationalError as exc:
        problem = error(exc.pgcode, f"cannot connect to the {what} database {describe(dsn)}: "
                                    f"{first_line(exc)}")
        if isinstance(problem, DatabaseUnavailable) and not refused_for_good(str(exc)):
            raise problem from None
        raise ConfigError(str(problem)) from None


def require_logical_decoding(conn: Any) -> None:
    """ConfigError saying exactly what to change when the source cannot do logical decoding."""
    with conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        level = cur.fetchone()[0]
    if level != "logical":
        raise ConfigError(
            f"the source database {describe(conn.dsn)} has wal_level = {level}; set wal_level = "
            "logical in postgresql.conf (on RDS: rds.logical_replication = 1) and restart the server")

"""Database errors are classified by SQLSTATE at one boundary: transient (retry) or terminal."""

from __future__ import annotations

import psycopg2
import psycopg2.errorcodes
import pytest

from totes_cdc import db
from totes_cdc.errors import ConfigError, DatabaseError, DatabaseUnavailable

KNOWN_CODES = [v for k, v in vars(psycopg2.errorcodes).items()
               if k.isupper() and not k.startswith("CLASS_") and isinstance(v, str) and len(v) == 5]


def test_no_sqlstate_class_is_left_unmapped():
    classes = {code[:2] for code in KNOWN_CODES}
    assert classes <= set(db.SQLSTATE_CLASSES), classes - set(db.SQLSTATE_CLASSES)
    assert set(db.SQLSTATE_CODES) <= set(KNOWN_CODES)


@pytest.mark.parametrize("sqlstate", [
    None,      # no SQLSTATE: the client lost the connection
    "08006",   # connection failure
    "40001",   # serialization failure
    "40P01",   # deadlock
    "53300",   # too many connections
    "57P01",   # admin shutdown (server restart)
    "57P03",   # cannot connect now (starting up)
    "55006",   # replication slot still active for a walsender going away
])
def test_transient(sqlstate):
    assert db.transient(sqlstate)
    assert isinstance(db.error(sqlstate, "x"), DatabaseUnavailable)


@pytest.mark.parametrize("sqlstate", [
    "22012",   # division by zero
    "23505",   # unique violation
    "42P01",   # undefined table
    "42704",   # undefined object (no such replication slot)
    "42501",   # insufficient privilege
    "28P01",   # invalid password
    "57P04",   # database dropped
    "XX000",   # internal error
])
def test_terminal(sqlstate):
    assert not db.transient(sqlstate)
    problem = db.error(sqlstate, "what happened")
    assert isinstance(problem, DatabaseError) and str(problem) == f"what happened (SQLSTATE {sqlstate})"


def test_translated_names_what_was_done():
    with pytest.raises(DatabaseUnavailable, match=r"^reading the slot: boom$"):
        with db.translated("reading the slot"):
            raise psycopg2.OperationalError("boom\nmore")


def test_an_unreachable_server_is_transient_and_hides_the_password():
    expected = r"cannot connect to the source database u@127\.0\.0\.1:1/x"
    with pytest.raises(DatabaseUnavailable, match=expected) as info:
        db.connect("host=127.0.0.1 port=1 dbname=x user=u password=hunter2", "source", connect_timeout=2)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("dsn", ["postgresql://u:s3cr%zzet@h/db", "host=h user=u password='s3cr et"])
def test_a_dsn_that_does_not_parse_is_a_setting_to_fix_and_its_error_hides_the_password(dsn):
    with pytest.raises(ConfigError, match=r"^the source DSN is not a valid connection string: ") as info:
        db.connect(dsn, "source")
    assert "s3cr" not in str(info.value)


@pytest.mark.parametrize(("message", "for_good"), [
    ('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  password authentication '
     'failed for user "capture"', True),
    ('FATAL:  no pg_hba.conf entry for replication connection from host "10.0.0.2", user "capture", '
     'no encryption', True),
    ('FATAL:  database "totesys" does not exist', True),
    ('FATAL:  role "capture" does not exist', True),
    ("server does not support SSL, but SSL was required", True),
    ('connection to server at "h" (10.0.0.1), port 5432 failed: Connection refused', False),
    ("FATAL:  the database system is starting up", False),
    ("FATAL:  sorry, too many clients already", False),
    ("SSL SYSCALL error: EOF detected", False),
    ("timeout expired", False),
])
def test_a_refused_connection_is_told_from_one_worth_retrying(message, for_good):
    assert db.refused_for_good(message) is for_good

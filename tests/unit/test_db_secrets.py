"""One layout of a database secret (RDS's), read into a DSN by capture and the loader, written
from a DSN by the local stack."""

from __future__ import annotations

import psycopg2.extensions
import pytest

from totes_cdc import db
from totes_cdc.errors import ConfigError

SECRET = {"host": "db.example", "port": 5433, "dbname": "totesys", "username": "capture",
          "password": "p w'd"}


def test_a_secret_becomes_a_dsn_with_tls_required_unless_it_says_otherwise():
    assert psycopg2.extensions.parse_dsn(db.dsn_from_secret(SECRET, "src")) == {
        "host": "db.example", "port": "5433", "dbname": "totesys", "user": "capture",
        "password": "p w'd", "sslmode": "require"}
    for mode in ("verify-full", "disable"):
        dsn = db.dsn_from_secret({**SECRET, "sslmode": mode}, "src")
        assert psycopg2.extensions.parse_dsn(dsn)["sslmode"] == mode
    assert psycopg2.extensions.parse_dsn(db.dsn_from_secret(
        {k: v for k, v in SECRET.items() if k != "port"}, "src"))["port"] == "5432"


@pytest.mark.parametrize("field", ["host", "dbname", "username", "password"])
def test_a_missing_field_is_named_and_no_value_is_shown(field):
    with pytest.raises(ConfigError, match=f"the database secret 'src' has no '{field}' field") as raised:
        db.dsn_from_secret({k: v for k, v in SECRET.items() if k != field}, "src")
    assert "p w'd" not in str(raised.value) and "db.example" not in str(raised.value)


@pytest.mark.parametrize("dsn", [
    "host=127.0.0.1 port=5001 dbname=warehouse user=totes password=s3cr=t",
    "postgresql://u:p%40ss@h:6000/d?sslmode=verify-full",
])
def test_the_secret_written_for_a_dsn_reads_back_as_the_same_connection(dsn):
    back = psycopg2.extensions.parse_dsn(db.dsn_from_secret(db.secret_from_dsn(dsn), "s"))
    assert back == {"sslmode": "prefer", **psycopg2.extensions.parse_dsn(dsn)}

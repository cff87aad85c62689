"""The loader's binary stage against its CSV stage: for every pair of types the binary writer
takes, generated columns (nulls, signs, extremes, text with quotes, commas and newlines) copied
in both formats into the same columns give the same rows."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json

import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from warehouse_loader.pgcopy import binary_copy

pytestmark = pytest.mark.integration

_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=5)
_MOMENTS = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1))


def _decimals(precision: int, scale: int) -> st.SearchStrategy[decimal.Decimal]:
    bound = decimal.Decimal(10) ** (precision - scale) - decimal.Decimal(10) ** -scale
    return st.decimals(-bound, bound, places=scale, allow_nan=False, allow_infinity=False)


# (PostgreSQL type, Arrow type, values)
COLUMNS = (
    ("smallint", pa.int16(), st.integers(-(2**15), 2**15 - 1)),
    ("integer", pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    ("bigint", pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    ("real", pa.float32(), st.floats(width=32)),
    ("double precision", pa.float64(), st.floats()),
    ("boolean", pa.bool_(), st.booleans()),
    ("date", pa.date32(), st.dates(dt.date(1900, 1, 1), dt.date(2200, 1, 1))),
    ("timestamp(3) without time zone", pa.timestamp("us"), _MOMENTS),
    ("timestamp without time zone", pa.timestamp("us"), _MOMENTS),
    ("timestamptz", pa.timestamp("us", tz="UTC"), _MOMENTS.map(lambda t: t.replace(tzinfo=dt.UTC))),
    ("numeric(10,2)", pa.decimal128(10, 2), _decimals(10, 2)),
    ("numeric(18,0)", pa.decimal128(18, 0), _decimals(18, 0)),
    ("numeric(5,5)", pa.decimal128(5, 5), _decimals(5, 5)),
    ("numeric(12,7)", pa.decimal128(12, 7), _decimals(12, 7)),
    ("numeric(16,3)", pa.decimal128(16, 3), _decimals(16, 3)),
    ("text", pa.string(), _TEXT),
    ("character varying", pa.string(), _TEXT),
    ("character varying(20)", pa.string(), _TEXT),
    ("character(5)", pa.string(), _TEXT),
    ("json", pa.string(),
     st.recursive(st.none() | st.integers() | _TEXT, st.lists, max_leaves=3).map(json.dumps)),
)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    rows = draw(st.integers(0, 12))
    arrays = [pa.array(draw(st.lists(st.none() | values, min_size=rows, max_size=rows)), typ)
              for _, typ, values in COLUMNS]
    return pa.table(arrays, names=[f"c{n}" for n in range(len(COLUMNS))])


@pytest.fixture
def conn(warehouse_dsn):
    connection = psycopg2.connect(warehouse_dsn)
    yield connection
    connection.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables())
def test_binary_rows_are_the_csv_rows(conn, table):
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f"c{n}"), sql.SQL(pg))
                                 for n, (pg, _, _) in enumerate(COLUMNS))
    data = binary_copy([(column.chunk(0) if column.num_chunks else pa.array([], column.type), pg)
                        for column, (pg, _, _) in zip(table.columns, COLUMNS, strict=True)])
    assert data is not None
    csv = io.BytesIO()
    pa_csv.write_csv(table, csv, pa_csv.WriteOptions(include_header=False))
    rows = {}
    with conn.cursor() as cur:
        for name, copy_format, payload in (("from_csv", "csv", csv.getvalue()),
                                           ("from_binary", "binary", data)):
            cur.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(sql.Identifier(name), columns))
            cur.copy_expert(f"COPY {name} FROM STDIN WITH (FORMAT {copy_format})", io.BytesIO(payload))
            # as text, row by row in order: NaN equals NaN, json is compared as written
            cur.execute(sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(sql.Identifier(name)))
            rows[name] = cur.fetchall()
    conn.rollback()
    assert rows["from_binary"] == rows["from_csv"]
    assert len(rows["from_binary"]) == table.num_rows

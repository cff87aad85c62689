"""A snapshot's values as the source stores them, through COPY's text format: NULL apart from '',
and tabs, newlines, backslashes, quotes and the rest of text as they are."""

from __future__ import annotations

import io

import psycopg2
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.copytext import text_columns
from tests.integration.capture.conftest import wait_for
from tests.integration.capture.lake import snapshot_twins

pytestmark = pytest.mark.integration

# Text the source can hold (no NUL), weighted to COPY's escapes and CSV's specials.
_AWKWARD = "\\\t\n\r\b\f\v\",'N .x"
_TEXT = st.one_of(st.text(st.sampled_from(_AWKWARD), max_size=8),
                  st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.none() | _TEXT, _TEXT), min_size=1, max_size=20))
def test_text_columns_read_back_what_the_source_stores(source_dsn, rows):
    conn = psycopg2.connect(source_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE awkward (a text, b text)")
            cur.executemany("INSERT INTO awkward VALUES (%s, %s)", rows)
            buf = io.BytesIO()
            cur.copy_expert("COPY (SELECT a, b FROM awkward) TO STDOUT", buf)
    finally:
        conn.close()
    a, b = text_columns(pa.py_buffer(buf.getvalue()), ["a", "b"])
    assert list(zip(a.to_pylist(), b.to_pylist(), strict=True)) == rows


AWKWARD_ADDRESSES = [
    ("tab\there", None), ("line\nbreak", ""), ("back\\slash", "\\N"), ("ends with \\", "\\\\n"),
    ('say "hi", then', "carriage\rreturn"), ("café ☕", "\b\f\v"), ("", "N"),
]


def test_the_snapshot_puts_awkward_text_in_both_zones_as_stored(totesys_dsn, capture_factory):
    conn = psycopg2.connect(totesys_dsn)
    with conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO address (address_id, address_line_1, address_line_2, city, postal_code, "
                        "country, phone, last_updated) VALUES (%s, %s, %s, 'Leeds', 'LS1', 'UK', '0', now())",
                        [(i, *pair) for i, pair in enumerate(AWKWARD_ADDRESSES, 1)])
    conn.close()
    service = capture_factory(totesys_dsn, tables=("address",))
    capture_factory.start(service)
    wait_for(lambda: service._phase == "streaming", what="streaming")
    [(events, rows)] = snapshot_twins()
    assert rows is not None
    stored = {str(i): pair for i, pair in enumerate(AWKWARD_ADDRESSES, 1)}
    assert {e.after["address_id"]: (e.after["address_line_1"], e.after["address_line_2"])
            for e in events if e.after} == stored
    assert {str(r["address_id"]): (r["address_line_1"], r["address_line_2"]) for r in rows} == stored


def test_other_types_read_back_as_their_text_output(source_dsn):
    """Types whose text output holds backslashes and quotes of its own: what ``::text`` prints,
    which is what pgoutput sends for them."""
    conn = psycopg2.connect(source_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE other (b bytea, a text[], j jsonb)")
            cur.execute("INSERT INTO other VALUES ('\\x5c00ff'::bytea, "
                        "ARRAY['back\\slash', 'tab\t', '\"q\"', NULL], "
                        "'{\"k\": \"line\\nbreak\\\\\"}'), (NULL, '{}', 'null')")
            cur.execute("SELECT b::text, a::text, j::text FROM other")
            printed = cur.fetchall()
            buf = io.BytesIO()
            cur.copy_expert("COPY (SELECT b, a, j FROM other) TO STDOUT", buf)
    finally:
        conn.close()
    columns = text_columns(pa.py_buffer(buf.getvalue()), ["b", "a", "j"])
    assert list(zip(*(c.to_pylist() for c in columns), strict=True)) == printed
    assert "\\" in printed[0][0] and "\\" in printed[0][1] and "\\n" in printed[0][2]

"""COPY's text format split into columns: any number of columns, NULL apart from '', escapes, and
the clear errors for text that is not what COPY writes."""

from __future__ import annotations

from unittest.mock import patch

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture import copytext
from capture.copytext import text_columns
from capture.errors import CaptureError

_ESCAPES = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_TEXT = st.one_of(st.text(st.sampled_from("\\\t\n\r\b\f\vN x"), max_size=6),
                  st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6))


def _copy_text(rows: list[tuple[str | None, ...]]) -> bytes:
    """The rows as PostgreSQL's COPY ... TO writes them in its text format."""
    def field(value: str | None) -> str:
        return "\\N" if value is None else "".join(_ESCAPES.get(c, c) for c in value)
    return "".join("\t".join(field(v) for v in row) + "\n" for row in rows).encode()


@settings(max_examples=80, deadline=None)
@given(data=st.data(), columns=st.integers(1, 5))
def test_columns_are_the_rows_values(data, columns):
    rows = data.draw(st.lists(st.tuples(*[st.none() | _TEXT] * columns), min_size=1, max_size=30))
    split = text_columns(pa.py_buffer(_copy_text(rows)), [f"c{i}" for i in range(columns)])
    assert [a.type for a in split] == [pa.string()] * columns
    assert list(zip(*(a.to_pylist() for a in split), strict=True)) == rows


@pytest.mark.parametrize("text", [b"1\t2\t3\n", b"1\n", b"1\t2\n1\n", b"1\t2\n3\t4"])
def test_rows_without_one_field_per_column_are_refused(text):
    with pytest.raises(CaptureError, match=r"COPY's text does not have 2 fields \(a, b\) on every row"):
        text_columns(pa.py_buffer(text), ["a", "b"])


def test_text_that_is_not_utf8_is_refused():
    with pytest.raises(CaptureError, match="COPY's text is not UTF-8"):
        text_columns(pa.py_buffer(b"1\tcaf\xe9\n"), ["a", "b"])


def test_a_column_too_big_for_a_string_array_names_the_column_and_the_setting():
    with patch.object(copytext, "_MAX_COLUMN_BYTES", 5), pytest.raises(
            CaptureError, match=r"column b: 6 bytes in one range.*lower capture.snapshot_chunk_rows"):
        text_columns(pa.py_buffer(b"1\tabcdef\n"), ["a", "b"])

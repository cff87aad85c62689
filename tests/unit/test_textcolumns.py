"""The Arrow cast of an integer column gives what the per-value parser gives, for any text; the
check of dates and timestamps accepts exactly their ISO forms."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from totes_cdc import textcolumns
from totes_cdc.contract import ContractError

INTEGER_TYPES = ["smallint", "integer", "bigint"]
texts = st.one_of(
    st.none(),
    st.text(alphabet="0123456789-+xXabfob _.e \u0663", max_size=12),
    st.from_regex(r"-?0[xX][0-9a-fA-F]{1,8}", fullmatch=True),
    st.integers(-(2**70), 2**70).map(str),
)


def _per_value(values: list[str | None], pg_type: str) -> list[int | None] | type[ContractError]:
    parse = textcolumns.value_parser(pg_type)
    try:
        return [None if v is None else parse(v) for v in values]
    except (ValueError, ArithmeticError, ContractError):
        return ContractError


@pytest.mark.parametrize("pg_type", INTEGER_TYPES)
@settings(max_examples=300, deadline=None)
@given(values=st.lists(texts, min_size=1, max_size=6))
@example(values=["0x1F"])
@example(values=["12", "-0X7f"])
@example(values=["+5", " 7", "1_0"])
def test_an_integer_column_is_typed_as_the_per_value_parser_types_it(pg_type, values):
    expected = _per_value(values, pg_type)
    try:
        got: list[int | None] | type[ContractError] = textcolumns.typed(pa.array(values, pa.string()),
                                                                        pg_type).to_pylist()
    except ContractError:
        got = ContractError
    assert got == expected


def test_a_canonical_integer_column_is_cast_by_arrow(monkeypatch):
    def refuse(pg_type):
        raise AssertionError(f"{pg_type} parsed value by value")

    monkeypatch.setattr(textcolumns, "value_parser", refuse)
    assert textcolumns.typed(pa.array(["-12", None, "0"]).slice(1), "integer").to_pylist() == [None, 0]
    assert textcolumns.typed(pa.array([None, None], pa.string()), "bigint").to_pylist() == [None, None]


# PostgreSQL's ISO output of a date and of a timestamp without time zone, years 0001 to 9999: the
# forms in which Arrow's cast equals the per-value parser.
DATE = r"(\d{3}[1-9]|\d\d[1-9]\d|\d[1-9]\d\d|[1-9]\d{3})-\d\d-\d\d"
PATTERNS = {False: f"^{DATE}$", True: f"^{DATE} ([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{{1,6}})?$"}


@st.composite
def _near_iso(draw: st.DrawFn) -> str:
    """The ISO layout with any numbers in it: years 0 to 10000, hours, minutes and seconds to 99,
    zero to eight fractional digits after a point or none."""
    year, month, day = draw(st.integers(0, 10_000)), draw(st.integers(0, 99)), draw(st.integers(0, 99))
    date = f"{year:04d}-{month:02d}-{day:02d}"
    if draw(st.booleans()):
        return date
    hour, minute, second = (draw(st.integers(0, 99)) for _ in range(3))
    fraction = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,8}", fullmatch=True)))
    return f"{date} {hour:02d}:{minute:02d}:{second:02d}{fraction}"


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A near-ISO text with one to three characters replaced, inserted or removed."""
    text = draw(_near_iso())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        new = draw(st.sampled_from("0123456789-: .T+Z\u0663x"))
        text = draw(st.sampled_from([text[:at] + new + text[at + 1:], text[:at] + new + text[at:],
                                     text[:at] + text[at + 1:]]))
    return text


iso_texts = st.one_of(st.none(), _near_iso(), _mutated(), st.text(alphabet="0123456789-: .", max_size=28),
                      *(st.from_regex(p, fullmatch=True) for p in PATTERNS.values()))


@settings(max_examples=1000, deadline=None)
@given(values=st.lists(iso_texts, min_size=1, max_size=4))
@example(values=["2000-01-01 23:59:59.999999", None, "0001-01-01", "9999-12-31 00:00:00"])
@example(values=["2000-01-01 24:00:00"])
@example(values=["2000-01-01 23:60:00"])
@example(values=["2000-01-01 23:59:60"])
@example(values=["2000-01-01 00:00:00."])
@example(values=["2000-01-01 00:00:001.5"])
@example(values=["2000-01-01 00:00:00.1234567"])
@example(values=["0000-01-01 00:00:00"])
@example(values=["10000-01-01 00:00:0"])
@example(values=["2000-01-01T00:00:00"])
def test_the_iso_check_accepts_what_the_pattern_matches(values):
    text = pa.array(["0000-00-00", *values], pa.string()).slice(1)  # an offset, as in a batch
    for time, pattern in PATTERNS.items():
        expected = pc.all(pc.match_substring_regex(text, pattern)).as_py() is not False
        assert textcolumns._iso(text, time) == expected, (time, values)

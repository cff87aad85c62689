"""The Arrow cast of an integer column gives what the per-value parser gives, for any text."""

from __future__ import annotations

import pyarrow as pa
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

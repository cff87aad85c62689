"""Which columns the binary stage takes; what it writes: tests/integration/warehouse_loader/test_pgcopy.py."""

from __future__ import annotations

import decimal

import pyarrow as pa
import pytest

from warehouse_loader.pgcopy import HEADER, TRAILER, binary_copy


@pytest.mark.parametrize(("array", "pg_type"), [
    (pa.array(["0e2b7c4e-0000-4000-8000-000000000000"]), "uuid"),  # a type kept as text
    (pa.array(["1.5"]), "numeric"),  # no typmod: text in the processed files
    (pa.array([decimal.Decimal("1.50")], pa.decimal128(19, 2)), "numeric(19,2)"),  # over 64 bits
    (pa.array([decimal.Decimal("1.5")], pa.decimal128(17, 1)), "numeric(17,1)"),  # shifted, over 64
    (pa.array([1], pa.int32()), "bigint"),
    (pa.array([0], pa.timestamp("us")), "timestamp with time zone"),
])
def test_a_column_whose_pair_of_types_it_does_not_write_gives_none(array, pg_type):
    assert binary_copy([(pa.array([1], pa.int32()), "integer"), (array, pg_type)]) is None


def test_rows_are_the_field_count_then_each_length_and_value():
    data = binary_copy([(pa.array([7, None], pa.int32()), "integer"), (pa.array(["é", ""]), "text")])
    assert data == (HEADER + b"\x00\x02" + b"\x00\x00\x00\x04\x00\x00\x00\x07" + b"\x00\x00\x00\x02\xc3\xa9"
                    + b"\x00\x02" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x00" + TRAILER)

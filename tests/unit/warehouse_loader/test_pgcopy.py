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


def test_a_null_numeric_is_written_whatever_bytes_its_slot_holds():
    valid = pa.array([decimal.Decimal("1.50"), decimal.Decimal("0")], pa.decimal128(10, 2))
    slots = bytearray(valid.buffers()[1].to_pybytes())
    slots[16:24] = (-(2**63)).to_bytes(8, "little", signed=True)  # the null's low word: int64's least
    array = pa.Array.from_buffers(pa.decimal128(10, 2), 2,
                                  [pa.array([True, False]).buffers()[1], pa.py_buffer(bytes(slots))])
    digits = b"\x00\x03\x00\x01\x00\x00\x00\x02" + b"\x00\x00\x00\x01\x13\x88"  # 1.50: 0000 0001 5000
    assert binary_copy([(array, "numeric(10,2)")]) == (
        HEADER + b"\x00\x01" + b"\x00\x00\x00\x0e" + digits + b"\x00\x01" + b"\xff\xff\xff\xff" + TRAILER)

"""The snapshot completion marker: what capture writes is what the loader reads back."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from totes_cdc.contract import Column, ContractError
from totes_cdc.snapshot_marker import LOWEST_READ_SEQ, SnapshotMarker, marker_parquet, read_marker


def test_a_marker_file_has_zero_rows_the_table_columns_and_reads_back() -> None:
    marker = SnapshotMarker("public", "design", 0x1A2B3C, ("p/public.design/a.parquet",), 7, True)
    table = pq.read_table(io.BytesIO(marker_parquet(marker, [Column("design_id", "integer", True)])))
    assert table.num_rows == 0
    assert table.column_names[-1] == "design_id" and table.column_names[0] == "_op"
    assert read_marker(table.schema.metadata) == marker
    assert LOWEST_READ_SEQ == -(2**31) + 1


def test_a_data_file_has_no_marker_and_a_malformed_one_is_a_contract_error() -> None:
    assert read_marker(None) is None
    assert read_marker({b"totes_cdc.stages": b"{}"}) is None
    with pytest.raises(ContractError):
        read_marker({b"totes_cdc.snapshot": b'{"schema": "public"}'})

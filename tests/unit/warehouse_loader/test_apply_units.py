"""Pure parts of applying a file: key parsing, contract validation, staging."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from totes_cdc.contract import Column, parquet_schema
from warehouse_loader.apply import BINARY_STAGE_MIN_ROWS, SourceTable, stage_copy, table_of, validate
from warehouse_loader.derivation import currency_name, iso_currency_parameters
from warehouse_loader.errors import BadFileError

COLUMNS = (Column("design_id", "integer", True), Column("design_name", "text"))
SPEC = SourceTable("design", (("design_id", "integer"), ("design_name", "text")), ("design_id",))
TS = dt.datetime(2024, 11, 15, tzinfo=dt.UTC)


def table(rows: list[tuple[str, int, int, int | None, str | None]], unchanged=None) -> pa.Table:
    schema = parquet_schema(COLUMNS)
    return pa.table({
        "_op": [r[0] for r in rows], "_lsn": [r[1] for r in rows], "_seq": [r[2] for r in rows],
        "_xid": [None] * len(rows), "_commit_ts": [TS] * len(rows),
        "_snapshot": [r[0] == "r" for r in rows],
        "_unchanged": unchanged or [[] for _ in rows],
        "design_id": [r[3] for r in rows], "design_name": [r[4] for r in rows]}, schema=schema)


def test_table_of_reads_the_table_from_the_key():
    assert table_of("processed/public.sales_order/date=2024-11-15/s-1-2.parquet") == "sales_order"
    for key in ("raw/public.sales_order/x.avro", "processed/sales_order/x.parquet",
                "processed/audit.sales_order/x.parquet", "processed/public./x.parquet"):
        with pytest.raises(BadFileError, match="not a processed file of a public table"):
            table_of(key)


def test_validate_accepts_the_contract_and_ignores_extra_columns():
    t = table([("r", 1, 1, 1, "Wooden"), ("t", 2, 1, None, None)])
    validate("k", t.append_column("added_later", pa.array(["x", "y"])), SPEC)


def test_validate_accepts_a_file_of_truncates_with_the_metadata_columns_only():
    validate("k", table([("t", 2, 1, None, None)]).drop_columns(["design_id", "design_name"]), SPEC)
    with pytest.raises(BadFileError, match="column 'design_id' is missing"):
        validate("k", table([("c", 2, 1, 1, "a")]).drop_columns(["design_id"]), SPEC)


@pytest.mark.parametrize(("t", "reason"), [
    (table([("r", 1, 1, 1, "a")]).drop_columns(["design_name"]), "column 'design_name' is missing"),
    (table([("r", 1, 1, 1, "a")]).drop_columns(["_seq"]), "column '_seq' is missing"),
    (table([("r", 1, 1, 1, "a")]).set_column(4, "_commit_ts", pa.array([TS.replace(tzinfo=None)])),
     r"column '_commit_ts' has type timestamp\[us\], the contract says timestamp\[us, tz=UTC\]"),
    (table([("r", 1, 1, 1, "a")]).set_column(1, "_lsn", pa.array([None], pa.int64())),
     "column '_lsn' has null values"),
    (table([("x", 1, 1, 1, "a"), ("r", 1, 2, 2, "b")]), r"unknown operations in _op: \['x'\]"),
    (table([("c", 1, 1, None, "a")]), "key column 'design_id' is null"),
])
def test_validate_names_what_breaks_the_contract(t, reason):
    with pytest.raises(BadFileError, match=reason) as info:
        validate("processed/public.design/k.parquet", t, SPEC)
    assert info.value.key == "processed/public.design/k.parquet"


def test_the_stage_is_binary_for_big_files_of_totesys_types_and_csv_for_others():
    """CSV, for a small file or a column type the binary writer does not write (a uuid kept as
    text), lists the unchanged columns and keeps nulls apart from empty text (the binary stage's
    rows: tests/integration/warehouse_loader/test_pgcopy.py)."""
    big = table([("u", 1, seq, seq, "x") for seq in range(1, BINARY_STAGE_MIN_ROWS + 1)])
    assert stage_copy(big, SPEC)[0] == "binary"
    assert stage_copy(big.slice(1), SPEC)[0] == "csv"
    t = table([("u", 1, 1, 1, ""), ("u", 1, 2, 2, None)], unchanged=[["design_name"], []])
    uuid_name = SourceTable("design", (("design_id", "integer"), ("design_name", "uuid")), ("design_id",))
    assert stage_copy(big, uuid_name)[0] == "csv"
    copy_format, data = stage_copy(t, SPEC)
    assert copy_format == "csv"
    lines = data.decode().splitlines()
    assert lines[0].startswith('"u",1,1,') and lines[0].endswith(',"design_name",1,""')
    assert lines[1].endswith(',"",2,')


def test_currency_names_are_iso_4217():
    assert currency_name("EUR") == "Euro"
    assert currency_name("usd") == "US Dollar"
    assert currency_name("XYZ") is None
    assert currency_name("POUND") is None
    params = iso_currency_parameters()
    assert params["iso_names"][params["iso_codes"].index("GBP")] == "Pound Sterling"

"""The lake's published schema and catalog (pure), and DuckDB over local Parquet files."""

import json
from pathlib import Path

import pytest
from fastavro.schema import parse_schema, to_parsing_canonical_form

from totes_cdc import contract
from totes_cdc.errors import ConfigError
from totes_ops import lake

AVSC = Path(contract.__file__).parent / lake.SCHEMA_FILE


def test_the_published_avsc_is_the_contracts_schema():
    """Regenerate with: python -c 'import json; from totes_cdc import contract;
    print(json.dumps(contract.AVRO_SCHEMA, indent=2))' > totes_cdc/change_event.avsc"""
    published = json.loads(AVSC.read_text())
    assert published == contract.AVRO_SCHEMA
    assert to_parsing_canonical_form(parse_schema(published)) == to_parsing_canonical_form(
        contract.PARSED_SCHEMA)
    assert lake.avro_schema_text() == AVSC.read_text()


def test_the_package_ships_the_avsc():
    import tomllib

    pyproject = tomllib.loads((AVSC.parents[1] / "pyproject.toml").read_text())
    assert "*.avsc" in pyproject["tool"]["setuptools"]["package-data"]["*"]


def test_source_columns_follow_the_totesys_schema():
    columns = lake.source_columns()
    assert len(columns) == 11
    transaction = {c.name: (c.type, c.key) for c in columns["transaction"]}
    assert transaction["transaction_id"] == ("integer", True)
    assert transaction["transaction_type"] == ('"TransactionType"', False)
    assert transaction["sales_order_id"] == ("integer", False)
    assert {c.name: c.type for c in columns["currency"]}["currency_code"] == "character varying(3)"


def test_catalog_types():
    raw = {c["name"]: c["type"] for c in lake.catalog()["raw_change_events"]}
    assert raw["columns"] == "array<struct<name:string,type:string,key:boolean>>"
    assert (raw["op"], raw["xid"], raw["after"], raw["commit_ts"]) == (
        "string", "bigint", "map<string,string>", "bigint")
    payment = {c["name"]: c["type"] for c in lake.catalog()["processed"]["processed_payment"]}
    assert (payment["payment_amount"], payment["paid"], payment["_unchanged"]) == (
        "decimal(10,2)", "boolean", "array<string>")


def test_results_render_as_aligned_columns():
    result = lake.Result(["id", "name"], [(1, "a"), (22, None)])
    assert result.render().splitlines() == ["id  name", "--  ----", "1   a", "22  NULL", "(2 rows)"]
    assert result.as_dicts() == [{"id": 1, "name": "a"}, {"id": 22, "name": None}]


def test_no_files_no_tables_and_a_clear_error(tmp_path):
    conn = lake.connect(tmp_path)
    with pytest.raises(ConfigError, match="query failed: Catalog Error"):
        lake.query(conn, "SELECT * FROM processed_sales_order")
    assert lake.query(conn, "SELECT 1 AS one").rows == [(1,)]
    with pytest.raises(ConfigError, match=r'^query failed: Binder Error: .* not found in FROM clause! '
                                          r'Candidate bindings: "one"$'):  # DuckDB's hint kept, one line
        lake.query(conn, "SELECT onw FROM (SELECT 1 AS one)")


def test_lake_catalog_prints_what_terraform_reads(capsys):
    from totes_ops.cli import main

    assert main(["lake", "catalog"]) == 0
    tables = AVSC.parents[1] / "infra" / "modules" / "lake" / "tables.json"
    assert json.loads(capsys.readouterr().out) == json.loads(tables.read_text())

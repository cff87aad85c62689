"""What the pipeline wrote, read as others read it: the real stream-processor handler writes real
events into the emulator's raw and processed zones; DuckDB (`totes-cdc lake query`) and fastavro's
container reader read them back, with the queries docs/lake.md documents."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from stream_processors import handler as handler_module
from stream_processors.handler import handler
from tests.events import (
    COMMIT_TS,
    SAMPLE_VALUES,
    Context,
    aggregated,
    change,
    lambda_event,
    sales_order_values,
)
from totes_cdc import contract
from totes_cdc.settings import settings
from totes_ops import lake
from totes_ops.cli import main

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[3] / "docs" / "lake.md"
LATER = COMMIT_TS + dt.timedelta(days=1)


def documented_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)


def order(order_id: int, **changes: str) -> dict[str, str | None]:
    return {**sales_order_values(order_id), **changes}


@pytest.fixture
def written(aws):
    """Two batches through the real handler: a snapshot of orders 41-43 and a payment, then an
    update and a delete of order 42 the next day."""
    handler_module._s3.cache_clear()
    snapshot = [change("sales_order", order(i), 900, i, op="r") for i in (41, 42, 43)]
    snapshot.append(change("payment", SAMPLE_VALUES["payment"], 1000, 1))
    later = [change("sales_order", order(42, units_sold="500", unit_price="3.10"), 1100, 1,
                    op="u", commit_ts=LATER),
             change("sales_order", order(42), 1200, 1, op="d", commit_ts=LATER)]
    assert handler(lambda_event(aggregated(snapshot), first_sequence=1), Context()) == {
        "batchItemFailures": []}
    assert handler(lambda_event(aggregated(later), first_sequence=10), Context()) == {
        "batchItemFailures": []}
    return snapshot + later


def test_duckdb_reads_the_processed_zone_with_the_documented_athena_queries(written, aws, tmp_path):
    lake_dir = tmp_path / "lake"
    assert lake.sync(aws.client("s3"), lake_dir) == 3        # 2 sales_order days + 1 payment
    assert lake.sync(aws.client("s3"), lake_dir) == 0        # immutable keys: copied once
    conn = lake.connect(lake_dir)
    history_sql, per_day_sql = documented_queries()

    history = lake.query(conn, history_sql)
    assert history.columns == ["_commit_ts", "_op", "units_sold", "unit_price", "agreed_delivery_date"]
    assert [(row[0].date(), row[1], row[2], row[3]) for row in history.rows] == [
        (COMMIT_TS.date(), "r", 84754, Decimal("2.43")),
        (LATER.date(), "u", 500, Decimal("3.10")),
        (LATER.date(), "d", None, None)]

    per_day = lake.query(conn, per_day_sql)
    assert per_day.rows == [(COMMIT_TS.date().isoformat(), "c", 1)]

    # The Glue catalog declares the columns DuckDB finds in the files, with the same types.
    described = {name: kind for name, kind, *_ in conn.execute(
        "DESCRIBE totes_cdc_lake.processed_sales_order").fetchall()}
    catalog = {c["name"]: c["type"] for c in lake.catalog()["processed"]["processed_sales_order"]}
    assert list(described) == [*catalog, "date"]
    duckdb_names = {"int": "INTEGER", "bigint": "BIGINT", "string": "VARCHAR", "boolean": "BOOLEAN",
                    "timestamp": "TIMESTAMP", "decimal(10,2)": "DECIMAL(10,2)",
                    "array<string>": "VARCHAR[]"}
    assert {n: duckdb_names[t] for n, t in catalog.items() if n != "_commit_ts"} == {
        n: described[n] for n in catalog if n != "_commit_ts"}
    assert described["_commit_ts"] == "TIMESTAMP WITH TIME ZONE"


def test_fastavro_reads_the_raw_zone_with_the_published_schema(written, aws):
    s3 = aws.client("s3")
    bucket = settings()["buckets"]["raw"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k.split("/")[1] for k in keys] == ["public.payment", "public.sales_order",
                                               "public.sales_order"]
    published = fastavro.parse_schema(json.loads(lake.avro_schema_text()))
    events = []
    for key in keys:
        reader = fastavro.reader(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()),
                                 reader_schema=published)
        in_file = fastavro.parse_schema(json.loads(reader.metadata["avro.schema"]))
        assert to_parsing_canonical_form(in_file) == to_parsing_canonical_form(published)
        events += [contract.from_record(record) for record in reader]
    assert sorted(events, key=lambda e: e.identity) == sorted(written, key=lambda e: e.identity)


def test_lake_query_command_prints_rows_as_json_and_a_bad_query_exits_2(written, tmp_path, capsys):
    assert main(["lake", "query", "--state-dir", str(tmp_path), "--json",
                 "SELECT sales_order_id, count(*) AS events FROM processed_sales_order "
                 "GROUP BY 1 ORDER BY 1"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == [{"sales_order_id": 41, "events": 1},
                                   {"sales_order_id": 42, "events": 3},
                                   {"sales_order_id": 43, "events": 1}]
    assert f"copied 3 new processed files to {tmp_path / 'lake'}" in out.err

    assert main(["lake", "query", "--state-dir", str(tmp_path),
                 "SELECT count(*) FROM processed_sales_order"]) == 0
    assert capsys.readouterr().out.splitlines() == ["count_star()", "------------", "5", "(1 row)"]

    assert main(["lake", "query", "--state-dir", str(tmp_path), "SELECT * FROM no_such_table"]) == 2
    assert capsys.readouterr().err.startswith("totes-cdc: error: query failed: Catalog Error")


def test_the_local_stack_registers_the_published_schema_as_terraform_does(aws):
    glue = aws.client("glue")
    registry = settings()["deploy"]["name"]
    version = glue.get_schema_version(
        SchemaId={"RegistryName": registry, "SchemaName": lake.SCHEMA_NAME},
        SchemaVersionNumber={"LatestVersion": True})
    assert json.loads(version["SchemaDefinition"]) == contract.AVRO_SCHEMA
    assert version["DataFormat"] == "AVRO"
    lake.register_schema(glue)                          # again: nothing changes
    assert glue.get_schema(SchemaId={"RegistryName": registry, "SchemaName": lake.SCHEMA_NAME})[
        "LatestSchemaVersion"] == 1

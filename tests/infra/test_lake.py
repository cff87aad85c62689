"""Offline checks of infra/modules/lake: the Glue Schema Registry and the Glue Data Catalog tables
(partition projection, no crawler) against what the pipeline writes and what `lake query` reads."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from stream_processors.files import BatchId, Partition
from tests.infra.hcl import INFRA, module, ref
from totes_cdc import contract
from totes_cdc.settings import settings
from totes_ops import lake

LAKE = INFRA / "modules" / "lake"
BATCH = BatchId("shardId-000000000001", "49590338271490256608559692538361571095921575989136588818",
                "49590338271490256608559692538361571095921575989136588900")


def _file_path(expression: str) -> Path:
    match = re.search(r'file\("\$\{path\.module\}/(.+?)"\)', expression)
    assert match, expression
    return (LAKE / match.group(1)).resolve()


def _template_matches(template: str, key: str, values: dict[str, str]) -> bool:
    """Does the projection's storage.location.template, filled with ``values``, hold ``key``?"""
    url = template
    for name, value in values.items():
        url = url.replace(f"$${{{name}}}", value)
    return key.startswith(url.split("/", 3)[3])


def test_tables_json_is_what_the_contract_and_the_totesys_schema_give():
    """Regenerate with: totes-cdc lake catalog > infra/modules/lake/tables.json"""
    assert json.loads((LAKE / "tables.json").read_text()) == lake.catalog()
    assert set(lake.catalog()["processed"]) == {f"processed_{t}" for t in settings()["source_tables"]}


def test_the_published_avro_schema_is_registered_in_the_glue_schema_registry():
    lake_module = module("lake")
    assert _file_path(lake_module.locals["avro_schema"]) == Path(contract.__file__).parent / lake.SCHEMA_FILE
    schema = lake_module.resources("aws_glue_schema")["change_event"]
    assert schema["schema_name"] == lake.SCHEMA_NAME                 # as the local stack names it
    assert lake_module.resources("aws_glue_registry")["this"]["registry_name"] == (
        "${var.settings.deploy.name}")
    assert schema["schema_definition"] == "${local.avro_schema}"
    assert (schema["data_format"], schema["compatibility"]) == ("AVRO", "BACKWARD")
    assert ref(schema["registry_arn"]) == "aws_glue_registry.this.arn"


def test_the_database_is_the_one_lake_query_names():
    expression = module("lake").locals["database"]
    assert expression == '${replace(var.settings.deploy.name, "-", "_")}_lake'
    assert settings()["deploy"]["name"].replace("-", "_") + "_lake" == lake.database()


def test_processed_tables_project_the_partitions_the_stream_processor_writes():
    lake_module = module("lake")
    table = lake_module.resources("aws_glue_catalog_table")["processed"]
    assert table["for_each"] == "${local.tables.processed}"
    assert table["table_type"] == "EXTERNAL_TABLE"
    assert table["partition_keys"] == [{"name": "date", "type": "string"}]
    projection = lake_module.locals["date_projection"]
    assert projection["projection.enabled"] == "true"
    assert (projection["projection.date.type"], projection["projection.date.format"]) == (
        "date", "yyyy-MM-dd")
    assert projection["projection.date.range"] == "${var.first_date},NOW"
    storage = table["storage_descriptor"][0]
    assert storage["ser_de_info"][0]["serialization_library"].endswith("ParquetHiveSerDe")
    assert storage["dynamic"][0]["columns"]["for_each"] == "${each.value}"

    template = re.search(r'"storage\.location\.template" = "([^"]+)"', table["parameters"]).group(1)
    cfg = settings()
    key = Partition("public", "sales_order", dt.date(2026, 11, 29)).key(
        cfg["prefixes"]["processed"], BATCH, cfg["suffixes"]["processed"])
    filled = (template.replace("${var.processed_bucket_name}", cfg["buckets"]["processed"])
              .replace("${var.settings.prefixes.processed}", cfg["prefixes"]["processed"])
              .replace("${local.source_table[each.key]}", "sales_order"))
    assert _template_matches(filled, key, {"date": "2026-11-29"}), (filled, key)
    assert template == storage["location"] + "date=$${date}/"


def test_the_raw_table_reads_every_source_table_with_the_avro_schema():
    lake_module = module("lake")
    table = lake_module.resources("aws_glue_catalog_table")["raw_change_events"]
    assert [k["name"] for k in table["partition_keys"]] == ["source_table", "date"]
    parameters = table["parameters"]
    assert '"projection.source_table.type" = "enum"' in parameters
    assert '"projection.source_table.values" = join(",", var.settings.source_tables)' in parameters
    assert '"avro.schema.literal" = local.avro_schema' in parameters
    storage = table["storage_descriptor"][0]
    assert storage["ser_de_info"][0]["serialization_library"].endswith("AvroSerDe")
    assert storage["dynamic"][0]["columns"]["for_each"] == "${local.tables.raw_change_events}"

    template = re.search(r'"storage\.location\.template" = "([^"]+)"', parameters).group(1)
    cfg = settings()
    key = Partition("public", "payment", dt.date(2026, 11, 29)).key(cfg["prefixes"]["raw"], BATCH,
                                                                     ".avro")
    filled = (template.replace("${var.raw_bucket_name}", cfg["buckets"]["raw"])
              .replace("${var.settings.prefixes.raw}", cfg["prefixes"]["raw"]))
    assert _template_matches(filled, key, {"source_table": "payment", "date": "2026-11-29"})


def test_the_pipeline_declares_the_lake_over_its_own_buckets():
    lake_call = module("pipeline").modules["lake"]
    assert lake_call["source"] == "../lake"
    assert lake_call["settings"] == "${local.settings}"
    assert lake_call["raw_bucket_name"] == "${module.storage.names.raw}"
    assert lake_call["processed_bucket_name"] == "${module.storage.names.processed}"

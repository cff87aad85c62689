# The lake that others can read: the change events' Avro schema in the Glue Schema Registry, and
# the raw and processed zones as Glue Data Catalog tables with partition projection, so Athena
# queries them with no crawler and no partition to add. The column lists come from tables.json,
# written by `totes-cdc lake catalog` from the change-event contract and the totesys schema (a test
# keeps them equal); the Avro schema is the package's published totes_cdc/change_event.avsc.

locals {
  # The same name totes_ops.lake.database() gives the local DuckDB schema.
  database     = "${replace(var.settings.deploy.name, "-", "_")}_lake"
  tables       = jsondecode(file("${path.module}/tables.json"))
  avro_schema  = file("${path.module}/../../../totes_cdc/change_event.avsc")
  source_table = { for name, _ in local.tables.processed : name => trimprefix(name, "processed_") }
  # Object keys end in .../<schema>.<table>/date=YYYY-MM-DD/<batch>: one partition per UTC day.
  date_projection = {
    "projection.enabled"            = "true"
    "projection.date.type"          = "date"
    "projection.date.format"        = "yyyy-MM-dd"
    "projection.date.range"         = "${var.first_date},NOW"
    "projection.date.interval"      = "1"
    "projection.date.interval.unit" = "DAYS"
    "EXTERNAL"                      = "TRUE"
  }
}

resource "aws_glue_registry" "this" {
  registry_name = var.settings.deploy.name
  description   = "Schemas of the change stream."
}

resource "aws_glue_schema" "change_event" {
  schema_name       = "change_event"
  registry_arn      = aws_glue_registry.this.arn
  data_format       = "AVRO"
  compatibility     = "BACKWARD"
  schema_definition = local.avro_schema
  description       = "One row change of a source table (totes_cdc/change_event.avsc)."
}

resource "aws_glue_catalog_database" "lake" {
  name        = local.database
  description = "The raw (Avro) and processed (Parquet) zones of the change stream."
}

resource "aws_glue_catalog_table" "processed" {
  for_each      = local.tables.processed
  name          = each.key
  database_name = aws_glue_catalog_database.lake.name
  description   = "Every change event of public.${local.source_table[each.key]}, one typed row each."
  table_type    = "EXTERNAL_TABLE"

  parameters = merge(local.date_projection, {
    "classification"            = "parquet"
    "storage.location.template" = "s3://${var.processed_bucket_name}/${var.settings.prefixes.processed}public.${local.source_table[each.key]}/date=$${date}/"
  })

  partition_keys {
    name = "date"
    type = "string"
  }

  storage_descriptor {
    location      = "s3://${var.processed_bucket_name}/${var.settings.prefixes.processed}public.${local.source_table[each.key]}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = each.value
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}

resource "aws_glue_catalog_table" "raw_change_events" {
  name          = "raw_change_events"
  database_name = aws_glue_catalog_database.lake.name
  description   = "Every change event exactly as received, all tables (Avro container files)."
  table_type    = "EXTERNAL_TABLE"

  parameters = merge(local.date_projection, {
    "classification"                 = "avro"
    "avro.schema.literal"            = local.avro_schema
    "projection.source_table.type"   = "enum"
    "projection.source_table.values" = join(",", var.settings.source_tables)
    "storage.location.template"      = "s3://${var.raw_bucket_name}/${var.settings.prefixes.raw}public.$${source_table}/date=$${date}/"
  })

  partition_keys {
    name = "source_table"
    type = "string"
  }

  partition_keys {
    name = "date"
    type = "string"
  }

  storage_descriptor {
    location      = "s3://${var.raw_bucket_name}/${var.settings.prefixes.raw}"
    input_format  = "org.apache.hadoop.hive.ql.io.avro.AvroContainerInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.avro.AvroContainerOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.serde2.avro.AvroSerDe"
      parameters            = { "avro.schema.literal" = local.avro_schema }
    }

    dynamic "columns" {
      for_each = local.tables.raw_change_events
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}

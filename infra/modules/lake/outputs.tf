output "database" {
  description = "Glue database holding raw_change_events and processed_<table>."
  value       = aws_glue_catalog_database.lake.name
}

output "schema_arn" {
  description = "The change event's schema in the Glue Schema Registry."
  value       = aws_glue_schema.change_event.arn
}

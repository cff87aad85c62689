variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "raw_bucket_name" {
  description = "The raw zone's bucket (Avro change events)."
  type        = string
}

variable "processed_bucket_name" {
  description = "The processed zone's bucket (Parquet per table)."
  type        = string
}

variable "first_date" {
  description = "Oldest commit date (yyyy-MM-dd) the date partition projection enumerates."
  type        = string
  default     = "2024-01-01"
}

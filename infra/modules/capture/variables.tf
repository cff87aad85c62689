variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "settings_overrides" {
  description = "JSON for $TOTES_CDC_SETTINGS_OVERRIDES (the environment's bucket names)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the capture image in the capture repository (the commit SHA in CI)."
  type        = string
}

variable "command" {
  description = "Arguments to the image's entry point (infra/docker/entrypoint.py: capture, resync, source-check)."
  type        = list(string)
}

variable "stream_arn" {
  description = "ARN of the change stream."
  type        = string
}

variable "raw_bucket_arn" {
  description = "ARN of the raw bucket (snapshot progress lives under settings prefixes.capture_state)."
  type        = string
}

variable "processed_bucket_arn" {
  description = "ARN of the processed bucket (snapshot and resync reads are written to the processed zone)."
  type        = string
}

variable "dead_letter_bucket_arn" {
  description = "ARN of the dead-letter bucket (events that cannot be sent to the stream)."
  type        = string
}

variable "source_secret_arn" {
  description = "Secret with the source connection (JSON: host, port, dbname, username, password)."
  type        = string
}

variable "source_db_sslmode" {
  description = "libpq sslmode for the source connection."
  type        = string
}

variable "kms_key_arn" {
  description = "The pipeline's KMS key."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets that reach the source RDS."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the capture task (network_access module)."
  type        = string
}

variable "cpu" {
  description = "Fargate CPU units of the task."
  type        = number
}

variable "memory_mb" {
  description = "Fargate memory of the task."
  type        = number
}

variable "images_kept" {
  description = "Images kept in the repository."
  type        = number
}

variable "warehouse_secret_arn" {
  description = "Secret with the warehouse connection (RDS layout), read by the scheduled source check."
  type        = string
}

variable "source_check_security_group_id" {
  description = "Security group of the scheduled source check (reaches both databases)."
  type        = string
}

variable "permissions_boundary" {
  description = "ARN of the pipeline's permissions boundary (modules/delivery), set on every role of the module."
  type        = string
}

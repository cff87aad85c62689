variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "repo_root" {
  description = "Path of the repository root (the artifact paths in settings are relative to it)."
  type        = string
}

variable "processed_files_queue_arn" {
  description = "ARN of the queue of new processed files."
  type        = string
}

variable "snapshot_files_queue" {
  description = "ARN and URL of the queue of snapshot files."
  type        = object({ arn = string, url = string })
}

variable "bucket_arns" {
  description = "Bucket ARNs by role (processed, dead_letter)."
  type        = map(string)
}

variable "artifacts_bucket" {
  description = "Bucket the function's zip is uploaded to."
  type        = string
}

variable "warehouse_secret_arn" {
  description = "Secret holding the warehouse DSN."
  type        = string
}

variable "kms_key_arn" {
  description = "The pipeline's KMS key."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets that reach the warehouse RDS."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the loader (network_access module)."
  type        = string
}

variable "environment" {
  description = "Environment variables of the function."
  type        = map(string)
}

variable "memory_mb" {
  description = "Function memory."
  type        = number
}

variable "reserved_concurrency" {
  description = "Concurrent loads at most (2 or more: the SQS mapping's minimum)."
  type        = number
}

variable "permissions_boundary" {
  description = "ARN of the pipeline's permissions boundary (modules/delivery), set on every role (the function's)."
  type        = string
}

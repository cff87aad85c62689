variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "repo_root" {
  description = "Path of the repository root (the artifact paths in settings are relative to it)."
  type        = string
}

variable "stream_arn" {
  description = "ARN of the change stream."
  type        = string
}

variable "bucket_arns" {
  description = "Bucket ARNs by role (raw, processed, dead_letter)."
  type        = map(string)
}

variable "artifacts_bucket" {
  description = "Bucket the function's zip is uploaded to."
  type        = string
}

variable "stream_failures_queue_arn" {
  description = "The mapping's on-failure destination (settings queues.stream_failures)."
  type        = string
}

variable "kms_key_arn" {
  description = "The pipeline's KMS key."
  type        = string
}

variable "environment" {
  description = "Environment variables of the function."
  type        = map(string)
}

variable "timeout_seconds" {
  description = "Function timeout."
  type        = number
}

variable "memory_mb" {
  description = "Function memory."
  type        = number
}

variable "reserved_concurrency" {
  description = "Concurrency cap: at least shards x parallelization_factor, or shards wait."
  type        = number
}

variable "enhanced_fan_out" {
  description = "Read the stream through a registered consumer (enhanced fan-out, records pushed) instead of polling it."
  type        = bool
}

variable "permissions_boundary" {
  description = "ARN of the pipeline's permissions boundary (modules/delivery), set on every role (the function's)."
  type        = string
}

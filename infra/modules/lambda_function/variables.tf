variable "name" {
  description = "Function name (also its role and log group)."
  type        = string
}

variable "handler" {
  description = "module.function of the handler."
  type        = string
}

variable "runtime" {
  description = "Lambda runtime (settings deploy.lambda_runtime)."
  type        = string
}

variable "artifact_path" {
  description = "Local path of the zip built by `make package`."
  type        = string
}

variable "artifacts_bucket" {
  description = "Bucket the zip is uploaded to (zips over 50 MB must come from S3)."
  type        = string
}

variable "policy_json" {
  description = "The function's own permissions (an IAM policy document)."
  type        = string
}

variable "environment" {
  description = "Environment variables of the function."
  type        = map(string)
}

variable "vpc" {
  description = "Subnets and security groups, for a function that must reach a database in the VPC; null for none."
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  default = null
}

variable "timeout_seconds" {
  description = "Function timeout."
  type        = number
}

variable "memory_mb" {
  description = "Function memory (also buys CPU)."
  type        = number
}

variable "reserved_concurrency" {
  description = "Concurrency cap of the function."
  type        = number
}

variable "kms_key_arn" {
  description = "KMS key for the log group, the environment and the artifact."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the function's log group."
  type        = number
}

variable "permissions_boundary" {
  description = "ARN of the pipeline's permissions boundary (modules/delivery), set on every role."
  type        = string
}

variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "name_suffix" {
  description = "Appended to every bucket name (bucket names are global)."
  type        = string
}

variable "account_id" {
  description = "AWS account that owns the buckets."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for default bucket encryption."
  type        = string
}

variable "raw_transitions" {
  description = "Raw zone lifecycle: storage class => days after creation."
  type        = map(number)
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object version is kept."
  type        = number
}

variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "account_id" {
  description = "AWS account that owns the processed bucket."
  type        = string
}

variable "processed_bucket_name" {
  description = "Name of the processed-zone bucket."
  type        = string
}

variable "processed_bucket_arn" {
  description = "ARN of the processed-zone bucket."
  type        = string
}

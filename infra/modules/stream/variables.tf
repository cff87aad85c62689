variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the stream."
  type        = string
}

variable "on_demand" {
  description = "ON_DEMAND capacity instead of settings stream.shard_count provisioned shards."
  type        = bool
}

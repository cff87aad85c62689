variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the secrets."
  type        = string
}

variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "name" {
  description = "Name prefix of the dashboard and alarms."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the alarm topic."
  type        = string
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic (each must confirm the subscription e-mail)."
  type        = list(string)
}

variable "stream_name" {
  description = "Name of the change stream."
  type        = string
}

variable "functions" {
  description = "The Lambda functions by role: name and timeout_seconds."
  type = map(object({
    name            = string
    timeout_seconds = number
  }))
}

variable "queue_names" {
  description = "Queue names by role (processed_files_dlq, stream_failures)."
  type        = map(string)
}

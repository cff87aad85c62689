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

variable "source_db_instance_id" {
  description = "DB instance identifier of the source (totesys) RDS instance, for its CloudWatch metrics."
  type        = string
}

variable "capture_cluster_name" {
  description = "ECS cluster of the capture service."
  type        = string
}

variable "capture_service_name" {
  description = "ECS service of the capture task."
  type        = string
}

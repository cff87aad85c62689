# Inputs and outputs of every environment root (linked from each envs/<name>/).

variable "vpc_id" {
  description = "VPC of the source and warehouse RDS instances."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the capture task and the loader Lambda."
  type        = list(string)
}

variable "source_db_security_group_id" {
  description = "Security group of the source (totesys) RDS instance."
  type        = string
}

variable "warehouse_db_security_group_id" {
  description = "Security group of the warehouse RDS instance."
  type        = string
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic."
  type        = list(string)
}

variable "capture_image_tag" {
  description = "Tag of the capture image to run (the deploy workflow passes the commit SHA)."
  type        = string
}

variable "source_db_instance_id" {
  description = "DB instance identifier of the source (totesys) RDS instance."
  type        = string
}

variable "aws_api_cidr" {
  description = "Destination of HTTPS to the AWS APIs: 0.0.0.0/0 via a NAT gateway, or the VPC CIDR with interface endpoints."
  type        = string
  default     = "0.0.0.0/0"
}

variable "artifacts_root" {
  description = "Folder under which settings' Lambda artifact paths (dist/lambda/*.zip) are found; null: the repository root."
  type        = string
  default     = null
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflows deploy (the deploy workflow passes it)."
  type        = string
}

variable "state_bucket" {
  description = "S3 bucket holding this environment's Terraform state (as given to terraform init)."
  type        = string
}

variable "stream_enhanced_fan_out" {
  description = "The stream processor reads through an enhanced fan-out consumer (records pushed, ~70 ms propagation, extra cost) instead of polling each shard about once a second; docs/latency.md."
  type        = bool
  default     = false
}

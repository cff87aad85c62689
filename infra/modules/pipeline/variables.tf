variable "environment" {
  description = "Environment name (dev, prod): part of the bucket names."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the source and warehouse RDS instances."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the capture task and the loader Lambda (with a NAT gateway or VPC endpoints for the AWS APIs)."
  type        = list(string)
}

variable "source_db_security_group_id" {
  description = "Security group of the source (totesys) RDS instance."
  type        = string
}

variable "source_db_instance_id" {
  description = "DB instance identifier of the source (totesys) RDS instance (its replication-slot, WAL and storage alarms)."
  type        = string
}

variable "source_db_port" {
  description = "Port of the source database."
  type        = number
  default     = 5432
}

variable "source_db_sslmode" {
  description = "libpq sslmode of the capture connection (the image carries the RDS CA bundle as PGSSLROOTCERT)."
  type        = string
  default     = "require"
}

variable "warehouse_db_security_group_id" {
  description = "Security group of the warehouse RDS instance."
  type        = string
}

variable "warehouse_db_port" {
  description = "Port of the warehouse database."
  type        = number
  default     = 5432
}

variable "aws_api_cidr" {
  description = "Destination of HTTPS to the AWS APIs: 0.0.0.0/0 via NAT, or the VPC CIDR with interface endpoints."
  type        = string
  default     = "0.0.0.0/0"
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic."
  type        = list(string)
}

variable "stream_on_demand" {
  description = "ON_DEMAND Kinesis capacity instead of settings stream.shard_count shards."
  type        = bool
  default     = false
}

variable "stream_enhanced_fan_out" {
  description = "The stream processor reads through an enhanced fan-out consumer (records pushed, ~70 ms) instead of polling (~1 s per shard); docs/latency.md."
  type        = bool
  default     = false
}

variable "raw_transitions" {
  description = "Raw zone lifecycle: storage class => days after creation."
  type        = map(number)
  default     = { STANDARD_IA = 30, GLACIER_IR = 90 }
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object version is kept."
  type        = number
  default     = 30
}

variable "capture_image_tag" {
  description = "Tag of the capture image to run (the deploy workflow passes the commit SHA)."
  type        = string
}

variable "capture_command" {
  description = "Arguments to the capture image's entry point (infra/docker/entrypoint.py: capture, resync, source-check)."
  type        = list(string)
  default     = ["capture"]
}

variable "capture_cpu" {
  description = "Fargate CPU units of the capture task."
  type        = number
  default     = 1024
}

variable "capture_memory_mb" {
  description = "Fargate memory of the capture task."
  type        = number
  default     = 2048
}

variable "capture_images_kept" {
  description = "Capture images kept in ECR (rollback targets)."
  type        = number
  default     = 20
}

variable "stream_processor_timeout_seconds" {
  description = "Stream-processor function timeout."
  type        = number
  default     = 120
}

variable "stream_processor_memory_mb" {
  description = "Stream-processor function memory."
  type        = number
  default     = 1024
}

variable "stream_processor_concurrency" {
  description = "Stream-processor concurrency cap (at least shards x parallelization_factor)."
  type        = number
  default     = 10
}

variable "loader_memory_mb" {
  description = "Loader function memory."
  type        = number
  default     = 1024
}

variable "loader_concurrency" {
  description = "Concurrent warehouse loads at most (bounds warehouse connections; 2 or more)."
  type        = number
  default     = 4
}

variable "artifacts_root" {
  description = "Folder under which settings' Lambda artifact paths (dist/lambda/*.zip) are found; null: the repository root."
  type        = string
  default     = null
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflows deploy (the delivery roles trust it)."
  type        = string
}

variable "state_bucket" {
  description = "S3 bucket holding the environment's Terraform state (the delivery roles use it)."
  type        = string
}

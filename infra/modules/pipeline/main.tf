# The whole pipeline in one AWS account and region. Every resource name and setting comes from
# infra/settings.json, the file the local stack reads too, so the two cannot drift apart.

locals {
  settings = jsondecode(file("${path.module}/../../settings.json"))
  # Where settings' artifact paths (dist/lambda/*.zip, from `make package`) are found.
  repo_root = coalesce(var.artifacts_root, "${path.module}/../../..")
  name      = local.settings.deploy.name
  # S3 bucket names are global: the environment and account make them unique.
  bucket_suffix = "-${var.environment}-${data.aws_caller_identity.current.account_id}"
  # The deployed processes read settings.json too; this hands them the suffixed bucket names.
  settings_overrides = jsonencode({
    buckets = {
      raw         = module.storage.names.raw
      processed   = module.storage.names.processed
      dead_letter = module.storage.names.dead_letter
    }
  })
}

data "aws_caller_identity" "current" {}

module "delivery" {
  source            = "../delivery"
  settings          = local.settings
  environment       = var.environment
  github_repository = var.github_repository
  state_bucket      = var.state_bucket
  # Names, not the buckets' outputs: an administrator applies delivery before the buckets exist.
  artifacts_bucket            = "${local.settings.deploy.buckets.artifacts}${local.bucket_suffix}"
  database_security_group_ids = [var.source_db_security_group_id, var.warehouse_db_security_group_id]
}

module "encryption" {
  source = "../encryption"
  name   = local.name
}

module "stream" {
  source      = "../stream"
  settings    = local.settings
  kms_key_arn = module.encryption.key_arn
  on_demand   = var.stream_on_demand
}

module "storage" {
  source                  = "../storage"
  settings                = local.settings
  name_suffix             = local.bucket_suffix
  account_id              = data.aws_caller_identity.current.account_id
  kms_key_arn             = module.encryption.key_arn
  raw_transitions         = var.raw_transitions
  noncurrent_version_days = var.noncurrent_version_days
}

module "lake" {
  source                = "../lake"
  settings              = local.settings
  raw_bucket_name       = module.storage.names.raw
  processed_bucket_name = module.storage.names.processed
}

module "queues" {
  source                = "../queues"
  settings              = local.settings
  account_id            = data.aws_caller_identity.current.account_id
  processed_bucket_name = module.storage.names.processed
  processed_bucket_arn  = module.storage.arns.processed
}

module "secrets" {
  source      = "../secrets"
  settings    = local.settings
  kms_key_arn = module.encryption.key_arn
}

module "network_access" {
  source                         = "../network_access"
  name                           = local.name
  vpc_id                         = var.vpc_id
  source_db_security_group_id    = var.source_db_security_group_id
  source_db_port                 = var.source_db_port
  warehouse_db_security_group_id = var.warehouse_db_security_group_id
  warehouse_db_port              = var.warehouse_db_port
  aws_api_cidr                   = var.aws_api_cidr
}

module "capture" {
  source                         = "../capture"
  settings                       = local.settings
  settings_overrides             = local.settings_overrides
  image_tag                      = var.capture_image_tag
  command                        = var.capture_command
  stream_arn                     = module.stream.arn
  raw_bucket_arn                 = module.storage.arns.raw
  processed_bucket_arn           = module.storage.arns.processed
  dead_letter_bucket_arn         = module.storage.arns.dead_letter
  source_secret_arn              = module.secrets.arns.source
  source_db_sslmode              = var.source_db_sslmode
  kms_key_arn                    = module.encryption.key_arn
  subnet_ids                     = var.private_subnet_ids
  security_group_id              = module.network_access.capture_security_group_id
  warehouse_secret_arn           = module.secrets.arns.warehouse
  source_check_security_group_id = module.network_access.source_check_security_group_id
  cpu                            = var.capture_cpu
  memory_mb                      = var.capture_memory_mb
  images_kept                    = var.capture_images_kept
  permissions_boundary           = module.delivery.boundary_arn
}

module "stream_processor" {
  source                    = "../stream_processor"
  settings                  = local.settings
  repo_root                 = local.repo_root
  stream_arn                = module.stream.arn
  bucket_arns               = module.storage.arns
  artifacts_bucket          = module.storage.names.artifacts
  stream_failures_queue_arn = module.queues.stream_failures_arn
  kms_key_arn               = module.encryption.key_arn
  environment               = { TOTES_CDC_SETTINGS_OVERRIDES = local.settings_overrides }
  timeout_seconds           = var.stream_processor_timeout_seconds
  memory_mb                 = var.stream_processor_memory_mb
  reserved_concurrency      = var.stream_processor_concurrency
  enhanced_fan_out          = var.stream_enhanced_fan_out
  permissions_boundary      = module.delivery.boundary_arn
}

module "loader" {
  source                    = "../loader"
  settings                  = local.settings
  repo_root                 = local.repo_root
  processed_files_queue_arn = module.queues.processed_files_arn
  snapshot_files_queue      = module.queues.snapshot_files
  bucket_arns               = module.storage.arns
  artifacts_bucket          = module.storage.names.artifacts
  warehouse_secret_arn      = module.secrets.arns.warehouse
  kms_key_arn               = module.encryption.key_arn
  subnet_ids                = var.private_subnet_ids
  security_group_id         = module.network_access.loader_security_group_id
  environment = {
    TOTES_CDC_SETTINGS_OVERRIDES = local.settings_overrides
    TOTES_CDC_WAREHOUSE_SECRET   = local.settings.secrets.warehouse
  }
  memory_mb            = var.loader_memory_mb
  reserved_concurrency = var.loader_concurrency
  permissions_boundary = module.delivery.boundary_arn
}

module "monitoring" {
  source       = "../monitoring"
  settings     = local.settings
  name         = local.name
  kms_key_arn  = module.encryption.key_arn
  alarm_emails = var.alarm_emails
  stream_name  = module.stream.name
  functions = {
    stream_processor = { name = module.stream_processor.function_name, timeout_seconds = module.stream_processor.timeout_seconds }
    loader           = { name = module.loader.function_name, timeout_seconds = module.loader.timeout_seconds }
  }
  queue_names           = module.queues.names
  source_db_instance_id = var.source_db_instance_id
  capture_cluster_name  = module.capture.cluster_name
  capture_service_name  = module.capture.service_name
}

# The warehouse-loader Lambda, attached to the VPC (it writes the warehouse RDS), and its two SQS
# event source mappings, configured from settings loader_mapping and snapshot_loader_mapping (as
# the local runner `totes-cdc load` is): the queue S3 announces processed files on, and the queue
# of snapshot files, which the function passes on from the first so that bulk loads never take the
# stream's workers. Files failing max_receive_count times move to the queues' DLQ.

data "aws_region" "current" {}

locals {
  region   = data.aws_region.current.name
  fn       = var.settings.deploy.functions.loader
  mapping  = var.settings.loader_mapping
  snapshot = var.settings.snapshot_loader_mapping
  prefixes = var.settings.prefixes
}

data "aws_iam_policy_document" "function" {
  statement {
    sid = "ConsumeProcessedFileQueue"
    actions = [
      "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
    ]
    resources = [var.processed_files_queue_arn, var.snapshot_files_queue.arn]
  }

  statement {
    sid       = "PassSnapshotFilesOn"
    actions   = ["sqs:SendMessage"]
    resources = [var.snapshot_files_queue.arn]
  }

  statement {
    sid       = "ReadProcessedFiles"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arns.processed}/${local.prefixes.processed}*"]
  }

  statement {
    sid       = "WriteDeadLetterFiles"
    actions   = ["s3:PutObject"]
    resources = ["${var.bucket_arns.dead_letter}/${local.prefixes.dead_letter_files}*"]
  }

  statement {
    sid       = "ReadWarehouseCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.warehouse_secret_arn]
  }

  # The key shared by the pipeline, only through the services this function uses it with.
  statement {
    sid       = "UsePipelineKeyThroughS3SecretsManagerAndLambda"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com", "secretsmanager.${local.region}.amazonaws.com", "lambda.${local.region}.amazonaws.com"]
    }
  }
}

module "function" {
  source = "../lambda_function"

  name             = local.fn.name
  handler          = local.fn.handler
  runtime          = var.settings.deploy.lambda_runtime
  artifact_path    = "${var.repo_root}/${local.fn.artifact}"
  artifacts_bucket = var.artifacts_bucket
  policy_json      = data.aws_iam_policy_document.function.json
  # PGSSLROOTCERT: the RDS CA bundle in the zip (stream_processors/packaging.py), so libpq verifies
  # the warehouse's certificate (sslmode require then checks the CA, verify-full the host name too)
  environment = merge(var.environment, {
    TOTES_CDC_SNAPSHOT_QUEUE_URL = var.snapshot_files_queue.url
    PGSSLROOTCERT                = "/var/task/rds-ca.pem"
  })
  vpc = {
    subnet_ids         = var.subnet_ids
    security_group_ids = [var.security_group_id]
  }
  # AWS advises a queue visibility timeout of at least six times the function timeout: 720 / 6 =
  # 120 s, room for a VPC cold start, the secret fetch and a load.
  timeout_seconds = floor(local.mapping.visibility_timeout_seconds / 6)
  memory_mb       = var.memory_mb
  # Both mappings at their caps at once, never throttled.
  reserved_concurrency = var.reserved_concurrency + local.snapshot.maximum_concurrency
  kms_key_arn          = var.kms_key_arn
  log_retention_days   = var.settings.deploy.log_retention_days
  permissions_boundary = var.permissions_boundary
}

resource "aws_lambda_event_source_mapping" "queue" {
  event_source_arn                   = var.processed_files_queue_arn
  function_name                      = module.function.arn
  batch_size                         = local.mapping.batch_size
  maximum_batching_window_in_seconds = local.mapping.maximum_batching_window_seconds
  function_response_types            = local.mapping.function_response_types

  # Caps concurrent loads, so the warehouse's connection count stays bounded.
  scaling_config {
    maximum_concurrency = var.reserved_concurrency
  }
}

# One snapshot file per invocation (a bulk load of up to snapshot_chunk_rows rows), at most
# snapshot_loader_mapping.maximum_concurrency at once, beside the stream's.
resource "aws_lambda_event_source_mapping" "snapshot_queue" {
  event_source_arn        = var.snapshot_files_queue.arn
  function_name           = module.function.arn
  batch_size              = local.snapshot.batch_size
  function_response_types = local.mapping.function_response_types

  scaling_config {
    maximum_concurrency = local.snapshot.maximum_concurrency
  }
}

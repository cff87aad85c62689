# The stream-processor Lambda and its Kinesis event source mapping, configured from settings
# stream_processor_mapping (the local runner `totes-cdc process` honours the same settings).
# With enhanced_fan_out the mapping reads through its own registered stream consumer: Kinesis pushes
# records to it over HTTP/2 (SubscribeToShard) instead of Lambda polling each shard with
# GetRecords (docs/latency.md, "Stream read: standard polling or enhanced fan-out").

data "aws_region" "current" {}

locals {
  region      = data.aws_region.current.name
  fn          = var.settings.deploy.functions.stream_processor
  mapping     = var.settings.stream_processor_mapping
  raw         = var.settings.prefixes.raw
  processed   = var.settings.prefixes.processed
  dead_letter = var.settings.prefixes.dead_letter_records
  writes = [
    "${var.bucket_arns.raw}/${local.raw}*",
    "${var.bucket_arns.processed}/${local.processed}*",
    "${var.bucket_arns.dead_letter}/${local.dead_letter}*",
  ]
}

resource "aws_kinesis_stream_consumer" "processor" {
  count      = var.enhanced_fan_out ? 1 : 0
  name       = local.fn.name
  stream_arn = var.stream_arn
}

data "aws_iam_policy_document" "function" {
  statement {
    sid = "ReadTheStream"
    actions = [
      "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
      "kinesis:GetShardIterator", "kinesis:ListShards",
    ]
    resources = [var.stream_arn]
  }

  # Enhanced fan-out: the mapping subscribes to the shards through this function's consumer only.
  dynamic "statement" {
    for_each = aws_kinesis_stream_consumer.processor
    content {
      sid       = "ReadThroughItsConsumer"
      actions   = ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]
      resources = [statement.value.arn]
    }
  }

  # It only writes: no s3:GetObject or s3:ListBucket.
  statement {
    sid       = "WriteRawProcessedAndDeadLetterObjects"
    actions   = ["s3:PutObject"]
    resources = local.writes
  }

  statement {
    sid       = "SendFailedBatchesToOnFailureDestination"
    actions   = ["sqs:SendMessage"]
    resources = [var.stream_failures_queue_arn]
  }

  # The key shared by the pipeline, only through the services this function uses it with.
  statement {
    sid       = "UsePipelineKeyThroughKinesisS3AndLambda"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${local.region}.amazonaws.com", "s3.${local.region}.amazonaws.com", "lambda.${local.region}.amazonaws.com"]
    }
  }
}

module "function" {
  source = "../lambda_function"

  name                 = local.fn.name
  handler              = local.fn.handler
  runtime              = var.settings.deploy.lambda_runtime
  artifact_path        = "${var.repo_root}/${local.fn.artifact}"
  artifacts_bucket     = var.artifacts_bucket
  policy_json          = data.aws_iam_policy_document.function.json
  environment          = var.environment
  timeout_seconds      = var.timeout_seconds
  memory_mb            = var.memory_mb
  reserved_concurrency = var.reserved_concurrency
  kms_key_arn          = var.kms_key_arn
  log_retention_days   = var.settings.deploy.log_retention_days
  permissions_boundary = var.permissions_boundary
}

resource "aws_lambda_event_source_mapping" "stream" {
  event_source_arn                   = var.enhanced_fan_out ? aws_kinesis_stream_consumer.processor[0].arn : var.stream_arn
  function_name                      = module.function.arn
  starting_position                  = local.mapping.starting_position
  batch_size                         = local.mapping.batch_size
  maximum_batching_window_in_seconds = local.mapping.maximum_batching_window_seconds
  bisect_batch_on_function_error     = local.mapping.bisect_batch_on_function_error
  maximum_retry_attempts             = local.mapping.maximum_retry_attempts
  maximum_record_age_in_seconds      = local.mapping.maximum_record_age_seconds
  parallelization_factor             = local.mapping.parallelization_factor
  function_response_types            = local.mapping.function_response_types

  destination_config {
    on_failure {
      destination_arn = var.stream_failures_queue_arn
    }
  }
}

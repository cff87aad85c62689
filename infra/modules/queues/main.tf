# Processed Parquet files are announced on an SQS queue (S3 ObjectCreated), which the loader Lambda
# consumes; a file that fails max_receive_count times moves to the dead-letter queue.
# stream_failures is the Kinesis mapping's on-failure destination.
#
# Retry budget: a file whose load fails (warehouse or S3 down) is received again after the
# visibility timeout, max_receive_count times: 720 s x 10 = 2 h before it reaches the DLQ, so a
# one-hour outage sends nothing there. `totes-cdc replay` moves DLQ messages back.

locals {
  dlq_retention_seconds = 1209600 # 14 days, the SQS maximum: time to inspect and replay
  # A message keeps its first enqueue time when it moves to the DLQ: the source queue keeps
  # messages for less than the DLQ, so a dead-lettered one still has days left there.
  retention_seconds = 345600 # 4 days
}

resource "aws_sqs_queue" "processed_files_dlq" {
  name                      = var.settings.queues.processed_files_dlq
  message_retention_seconds = local.dlq_retention_seconds
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "processed_files" {
  name                       = var.settings.queues.processed_files
  visibility_timeout_seconds = var.settings.loader_mapping.visibility_timeout_seconds
  message_retention_seconds  = local.retention_seconds
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.processed_files_dlq.arn
    maxReceiveCount     = var.settings.loader_mapping.max_receive_count
  })
}

# Snapshot reads' files and markers, passed on by the loader from processed_files so that their
# bulk loads have a mapping and concurrency of their own; same retry budget and DLQ.
resource "aws_sqs_queue" "snapshot_files" {
  name                       = var.settings.queues.snapshot_files
  visibility_timeout_seconds = var.settings.loader_mapping.visibility_timeout_seconds
  message_retention_seconds  = local.retention_seconds
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.processed_files_dlq.arn
    maxReceiveCount     = var.settings.loader_mapping.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "processed_files_dlq" {
  queue_url = aws_sqs_queue.processed_files_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.processed_files.arn, aws_sqs_queue.snapshot_files.arn]
  })
}

resource "aws_sqs_queue" "stream_failures" {
  name                      = var.settings.queues.stream_failures
  message_retention_seconds = local.dlq_retention_seconds
  sqs_managed_sse_enabled   = true
}

data "aws_iam_policy_document" "processed_files" {
  statement {
    sid = "ProcessedBucketAnnouncesNewFiles"
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.processed_files.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [var.processed_bucket_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [var.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "processed_files" {
  queue_url = aws_sqs_queue.processed_files.id
  policy    = data.aws_iam_policy_document.processed_files.json
}

resource "aws_s3_bucket_notification" "processed" {
  bucket = var.processed_bucket_name

  queue {
    queue_arn     = aws_sqs_queue.processed_files.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.settings.prefixes.processed
    filter_suffix = var.settings.suffixes.processed
  }

  depends_on = [aws_sqs_queue_policy.processed_files]
}

# The pipeline's buckets: raw zone (immutable Avro, replayable), processed zone (Parquet),
# dead-letter, Lambda artifacts, and the access-log bucket that records every request to them.
# S3 bucket names are global: each carries the environment's suffix.

locals {
  data_buckets = {
    raw         = "${var.settings.buckets.raw}${var.name_suffix}"
    processed   = "${var.settings.buckets.processed}${var.name_suffix}"
    dead_letter = "${var.settings.buckets.dead_letter}${var.name_suffix}"
    artifacts   = "${var.settings.deploy.buckets.artifacts}${var.name_suffix}"
  }
  buckets = merge(local.data_buckets, { access_logs = "${var.settings.deploy.buckets.access_logs}${var.name_suffix}" })
}

resource "aws_s3_bucket" "this" {
  for_each = local.buckets
  #checkov:skip=CKV_AWS_144:Single-region pipeline; the raw zone is the replay source and is versioned, replication to another region is a disaster-recovery decision left to each environment.
  #checkov:skip=CKV_AWS_145:Only the access_logs instance uses SSE-S3 (server access logging cannot deliver to SSE-KMS buckets); every other bucket uses the pipeline's KMS key, asserted in tests/infra.
  #checkov:skip=CKV2_AWS_62:Only the processed zone has consumers (S3 to SQS, in the queues module); the other buckets have none to notify.
  bucket = each.value
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

# The access-log bucket uses SSE-S3: S3 server access logging cannot deliver to SSE-KMS buckets.
resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = each.key == "access_logs" ? "AES256" : "aws:kms"
      kms_master_key_id = each.key == "access_logs" ? null : var.kms_key_arn
    }
    bucket_key_enabled = each.key != "access_logs"
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = local.data_buckets
  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.this["access_logs"].id
  target_prefix = "${each.key}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    id     = "housekeeping"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    # The raw zone is kept (it is the replay source) but moves to cheaper storage as it ages.
    dynamic "transition" {
      for_each = each.key == "raw" ? var.raw_transitions : {}
      content {
        storage_class = transition.key
        days          = transition.value
      }
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  for_each = local.buckets

  # A Deny may use wildcards: it only takes permissions away.
  statement {
    sid    = "DenyInsecureTransport"
    effect = "Deny"
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "access_logs" ? [1] : []
    content {
      sid = "S3ServerAccessLogsDelivery"
      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.this[each.key].arn}/*"]
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [var.account_id]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  policy   = data.aws_iam_policy_document.bucket[each.key].json
}

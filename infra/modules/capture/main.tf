# The capture service: one ECS Fargate task reading the replication slot and writing the stream.
# A slot has exactly one reader, so the service never runs two tasks, not even during a deployment.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  service      = var.settings.deploy.capture_service
  state_dir    = "/var/lib/totes-cdc"
  state_prefix = var.settings.prefixes.capture_state
  log_group    = "/ecs/${local.service}"
  log_arn      = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:${local.log_group}"
}

resource "aws_ecr_repository" "capture" {
  name                 = var.settings.deploy.capture_repository
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "capture" {
  repository = aws_ecr_repository.capture.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the last ${var.images_kept} images (rollback targets)"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = var.images_kept }
      action       = { type = "expire" }
    }]
  })
}

resource "aws_cloudwatch_log_group" "capture" {
  name              = local.log_group
  retention_in_days = var.settings.deploy.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# Execution role: what ECS needs to start the task (pull the image, inject the secret, ship logs).
resource "aws_iam_role" "execution" {
  name                 = "${local.service}-execution"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary
}

data "aws_iam_policy_document" "execution" {
  # ECR's registry login has no resource-level permission: AWS requires "*".
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullCaptureImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.capture.arn]
  }

  statement {
    sid       = "ShipLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.log_arn}:*"]
  }

  statement {
    sid       = "InjectSourceCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.source_secret_arn]
  }

  statement {
    sid       = "DecryptSecretAndImageWithPipelineKey"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com", "ecr.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${local.service}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# Task role: what the capture process itself does.
resource "aws_iam_role" "task" {
  name                 = "${local.service}-task"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary
}

data "aws_iam_policy_document" "task" {
  statement {
    sid = "WriteTheStream"
    actions = [
      "kinesis:PutRecords", "kinesis:PutRecord", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
      "kinesis:ListShards",
    ]
    resources = [var.stream_arn]
  }

  statement {
    sid       = "EncryptStreamRecordsAndState"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${data.aws_region.current.name}.amazonaws.com", "s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }

  statement {
    sid       = "SnapshotProgressState"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.raw_bucket_arn}/${local.state_prefix}*"]
  }

  # The snapshot and resync reads go straight to the lake (raw and processed zones), as the stream
  # processor's files do, with conditional puts.
  statement {
    sid       = "WriteSnapshotFilesToTheLake"
    actions   = ["s3:PutObject"]
    resources = ["${var.raw_bucket_arn}/${var.settings.prefixes.raw}*", "${var.processed_bucket_arn}/${var.settings.prefixes.processed}*"]
  }

  # A resumed snapshot lists and reads back the raw files an earlier read put without saving them,
  # to write their processed twins (capture.snapshot.LakeSnapshot._adopt).
  statement {
    sid       = "ReadBackUnsavedSnapshotFiles"
    actions   = ["s3:GetObject"]
    resources = ["${var.raw_bucket_arn}/${var.settings.prefixes.raw}*"]
  }

  statement {
    sid       = "DeadLetterUnsendableEvents"
    actions   = ["s3:PutObject"]
    resources = ["${var.dead_letter_bucket_arn}/${var.settings.prefixes.dead_letter_records}capture/*"]
  }

  # The state prefix: a missing state object reads as "not found" (first start) rather than
  # "access denied". The raw prefix: the unsaved snapshot files above are listed.
  statement {
    sid       = "ListSnapshotProgressStateAndRawFiles"
    actions   = ["s3:ListBucket"]
    resources = [var.raw_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.state_prefix}*", "${var.settings.prefixes.raw}*"]
    }
  }

  # PutMetricData has no resource-level permission: AWS requires "*"; scoped by namespace.
  statement {
    sid       = "MetricsInOwnNamespace"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.settings.metrics_namespace]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "${local.service}-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

resource "aws_ecs_cluster" "capture" {
  name = local.service
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_service" "capture" {
  name             = local.service
  cluster          = aws_ecs_cluster.capture.id
  task_definition  = aws_ecs_task_definition.this["capture"].arn
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  desired_count    = 1

  # Exactly one reader per replication slot: a deployment stops the old task (SIGTERM, then
  # stopTimeout) before it starts the new one. PostgreSQL also refuses a second reader of an
  # active slot, so an overlap could only fail, never duplicate; these settings avoid even that.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_id]
    assign_public_ip = false
  }

  propagate_tags = "SERVICE"
}

# The scheduled source check (`totes-cdc source-check`, warehouse_loader/source_check.py): an EventBridge
# rule starts it as an ECS task from the capture image, every settings source_check.schedule_minutes.
# It puts the capture slot's lag (from pg_replication_slots) and the reconcile differences as
# metrics, so the source stays watched when capture is down.

locals {
  check          = "${var.settings.deploy.name}-source-check"
  check_log      = "/ecs/${local.check}"
  check_schedule = "rate(${var.settings.source_check.schedule_minutes} minutes)"
}

resource "aws_cloudwatch_log_group" "source_check" {
  name              = local.check_log
  retention_in_days = var.settings.deploy.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_iam_role" "source_check" {
  name                 = "${local.check}-task"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary
}

data "aws_iam_policy_document" "source_check" {
  statement {
    sid       = "ReadDatabaseCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.source_secret_arn, var.warehouse_secret_arn]
  }

  statement {
    sid       = "ReadRawZoneForFactHistory"
    actions   = ["s3:GetObject"]
    resources = ["${var.raw_bucket_arn}/${var.settings.prefixes.raw}*"]
  }

  statement {
    sid       = "ListRawZone"
    actions   = ["s3:ListBucket"]
    resources = [var.raw_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.settings.prefixes.raw}*"]
    }
  }

  statement {
    sid       = "DecryptSecretsAndRawZone"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com", "s3.${data.aws_region.current.name}.amazonaws.com"]
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

resource "aws_iam_role_policy" "source_check" {
  name   = "${local.check}-task"
  role   = aws_iam_role.source_check.id
  policy = data.aws_iam_policy_document.source_check.json
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "events" {
  name                 = "${local.check}-schedule"
  assume_role_policy   = data.aws_iam_policy_document.events_assume.json
  permissions_boundary = var.permissions_boundary
}

data "aws_iam_policy_document" "events" {
  statement {
    sid       = "RunTheSourceCheckTask"
    actions   = ["ecs:RunTask"]
    resources = [aws_ecs_task_definition.this["source_check"].arn_without_revision]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.capture.arn]
    }
  }

  statement {
    sid       = "PassTheTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.source_check.arn]
  }
}

resource "aws_iam_role_policy" "events" {
  name   = "${local.check}-schedule"
  role   = aws_iam_role.events.id
  policy = data.aws_iam_policy_document.events.json
}

resource "aws_cloudwatch_event_rule" "source_check" {
  name                = local.check
  description         = "Runs totes-cdc source-check: slot lag from pg_replication_slots, reconcile"
  schedule_expression = local.check_schedule
}

resource "aws_cloudwatch_event_target" "source_check" {
  rule     = aws_cloudwatch_event_rule.source_check.name
  arn      = aws_ecs_cluster.capture.arn
  role_arn = aws_iam_role.events.arn

  ecs_target {
    task_definition_arn = aws_ecs_task_definition.this["source_check"].arn_without_revision
    launch_type         = "FARGATE"
    task_count          = 1
    network_configuration {
      subnets          = var.subnet_ids
      security_groups  = [var.source_check_security_group_id]
      assign_public_ip = false
    }
  }
}

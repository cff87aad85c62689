# One Lambda function as the pipeline deploys them: its artifact uploaded to the artifacts bucket,
# an execution role with only the given permissions plus logging and tracing, a log group
# encrypted with the pipeline's key, X-Ray tracing, and a concurrency cap.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  log_group_arn = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/aws/lambda/${var.name}"
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.name
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary
}

data "aws_iam_policy_document" "this" {
  source_policy_documents = [var.policy_json]

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.log_group_arn}:*"]
  }

  # X-Ray has no resource-level permissions: AWS requires "*". No cloudwatch:PutMetricData: the
  # functions print their metrics in the embedded metric format, which CloudWatch Logs turns into
  # metrics.
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  # Lambda manages the network interfaces of a VPC-attached function; these EC2 actions have no
  # resource-level permissions: AWS requires "*".
  dynamic "statement" {
    for_each = var.vpc == null ? [] : [1]
    content {
      sid = "VpcNetworkInterfaces"
      actions = [
        "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
      ]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = var.name
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_s3_object" "artifact" {
  bucket      = var.artifacts_bucket
  key         = "lambda/${var.name}/${filemd5(var.artifact_path)}.zip"
  source      = var.artifact_path
  source_hash = filemd5(var.artifact_path)
  kms_key_id  = var.kms_key_arn
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:Invoked only through an event source mapping (synchronously): failed records go to the mapping's on-failure destination or the queue's dead-letter queue; an async-invocation DLQ would never receive anything.
  #checkov:skip=CKV_AWS_117:The function that talks to RDS (the loader) is attached to the VPC through var.vpc; the stream processor talks only to AWS APIs.
  #checkov:skip=CKV_AWS_272:Artifacts are built by CI from the reviewed main branch and uploaded only by the deploy role (OIDC); code signing is not set up.
  function_name                  = var.name
  role                           = aws_iam_role.this.arn
  handler                        = var.handler
  runtime                        = var.runtime
  architectures                  = ["x86_64"]
  s3_bucket                      = aws_s3_object.artifact.bucket
  s3_key                         = aws_s3_object.artifact.key
  source_code_hash               = filebase64sha256(var.artifact_path)
  memory_size                    = var.memory_mb
  timeout                        = var.timeout_seconds
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = var.kms_key_arn

  tracing_config {
    mode = "Active"
  }

  environment {
    # No POWERTOOLS_SERVICE_NAME or POWERTOOLS_METRICS_NAMESPACE: the code names its metrics'
    # namespace and service dimension from settings.json, as the alarms do.
    variables = var.environment
  }

  dynamic "vpc_config" {
    for_each = var.vpc == null ? [] : [var.vpc]
    content {
      subnet_ids         = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
    }
  }

  depends_on = [aws_iam_role_policy.this, aws_cloudwatch_log_group.this]
}

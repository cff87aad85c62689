# What GitHub Actions deploys with: the account's GitHub OIDC provider and two roles, assumable only
# by this repository's workflows with short-lived tokens (no stored keys):
# - deploy: the environment's deploy job (GitHub environment <env>, required reviewers on prod);
#   manages the pipeline's resources, all named from settings deploy.name;
# - plan: pull requests and the environment's plan job (GitHub environment <env>-plan); reads only.
# The roles exist before the first workflow run: an administrator applies this module once
# (docs/deploy.md).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  name      = var.settings.deploy.name
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  arn       = "arn:${data.aws_partition.current.partition}"
  issuer    = "token.actions.githubusercontent.com"
  repo      = "repo:${var.github_repository}"
  glue_name = replace(local.name, "-", "_")
  # Everything the pipeline creates, by service: named from settings deploy.name.
  owned = {
    s3             = ["${local.arn}:s3:::${local.name}-*", "${local.arn}:s3:::${local.name}-*/*"]
    kinesis        = ["${local.arn}:kinesis:${local.region}:${local.account}:stream/${local.name}-*"]
    sqs            = ["${local.arn}:sqs:${local.region}:${local.account}:${local.name}-*"]
    sns            = ["${local.arn}:sns:${local.region}:${local.account}:${local.name}-*"]
    lambda         = ["${local.arn}:lambda:${local.region}:${local.account}:function:${local.name}-*"]
    logs           = ["${local.arn}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${local.name}-*", "${local.arn}:logs:${local.region}:${local.account}:log-group:/ecs/${local.name}-*"]
    ecr            = ["${local.arn}:ecr:${local.region}:${local.account}:repository/${local.name}-*"]
    ecs            = ["${local.arn}:ecs:${local.region}:${local.account}:cluster/${local.name}-*", "${local.arn}:ecs:${local.region}:${local.account}:service/${local.name}-*/*"]
    iam            = ["${local.arn}:iam::${local.account}:role/${local.name}-*"]
    secretsmanager = ["${local.arn}:secretsmanager:${local.region}:${local.account}:secret:${local.name}/*"]
    cloudwatch     = ["${local.arn}:cloudwatch:${local.region}:${local.account}:alarm:${local.name}-*", "${local.arn}:cloudwatch::${local.account}:dashboard/${local.name}"]
    events         = ["${local.arn}:events:${local.region}:${local.account}:rule/${local.name}-*"]
    glue = [
      "${local.arn}:glue:${local.region}:${local.account}:catalog",
      "${local.arn}:glue:${local.region}:${local.account}:database/${local.glue_name}*",
      "${local.arn}:glue:${local.region}:${local.account}:table/${local.glue_name}*/*",
      "${local.arn}:glue:${local.region}:${local.account}:registry/${local.name}",
      "${local.arn}:glue:${local.region}:${local.account}:schema/${local.name}/*",
    ]
  }
  state = ["${local.arn}:s3:::${var.state_bucket}", "${local.arn}:s3:::${var.state_bucket}/*"]
}

resource "aws_iam_openid_connect_provider" "github" {
  url            = "https://${local.issuer}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_policy_document" "trust" {
  for_each = {
    deploy = ["${local.repo}:environment:${var.environment}"]
    plan   = ["${local.repo}:pull_request", "${local.repo}:environment:${var.environment}-plan"]
  }
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.github.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = each.value
    }
  }
}

resource "aws_iam_role" "github" {
  for_each             = data.aws_iam_policy_document.trust
  name                 = "${local.name}-github-${each.key}"
  assume_role_policy   = each.value.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "deploy" {
  #checkov:skip=CKV_AWS_109:Terraform manages the permissions of the pipeline's own roles (iam:* on role/<name>-* only, and the key it creates).
  #checkov:skip=CKV_AWS_111:Every write is limited to resources named from settings deploy.name, except the few AWS grants only on "*" (statement CreateWhatHasNoNameYet).
  #checkov:skip=CKV_AWS_356:"*" only for actions AWS grants on no narrower resource (statement CreateWhatHasNoNameYet).
  dynamic "statement" {
    for_each = local.owned
    content {
      sid       = "Manage${title(statement.key)}"
      actions   = ["${statement.key}:*"]
      resources = statement.value
    }
  }

  statement {
    sid       = "ManageTheGitHubProvider"
    actions   = ["iam:GetOpenIDConnectProvider", "iam:TagOpenIDConnectProvider", "iam:UpdateOpenIDConnectProviderThumbprint"]
    resources = [aws_iam_openid_connect_provider.github.arn]
  }

  statement {
    sid       = "PassOnlyThePipelinesRoles"
    actions   = ["iam:PassRole"]
    resources = ["${local.arn}:iam::${local.account}:role/${local.name}-*"]
  }

  # AWS grants these on no narrower resource (a key or security group has no ARN before it exists,
  # task definitions and event source mappings are registered account-wide).
  statement {
    sid = "CreateWhatHasNoNameYet"
    actions = [
      "kms:CreateKey", "kms:CreateAlias", "kms:ListAliases", "kms:DescribeKey", "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus", "kms:EnableKeyRotation", "kms:PutKeyPolicy", "kms:ListResourceTags",
      "kms:TagResource", "kms:ScheduleKeyDeletion", "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey",
      "kms:CreateGrant", "kms:DeleteAlias", "kms:UpdateAlias",
      "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeManagedPrefixLists",
      "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeNetworkInterfaces",
      "ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupEgress",
      "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress",
      "ec2:CreateTags",
      "ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition", "ecs:DescribeTaskDefinition",
      "lambda:CreateEventSourceMapping", "lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping",
      "lambda:DeleteEventSourceMapping", "lambda:ListEventSourceMappings",
      "ecr:GetAuthorizationToken", "logs:DescribeLogGroups", "cloudwatch:DescribeAlarms",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "TerraformState"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
    resources = local.state
  }
}

data "aws_iam_policy_document" "plan" {
  #checkov:skip=CKV_AWS_356:Describe and List actions AWS grants on no narrower resource (statement ReadWhatHasNoName); no Get on "*".
  dynamic "statement" {
    for_each = local.owned
    content {
      sid       = "Read${title(statement.key)}"
      actions   = ["${statement.key}:Describe*", "${statement.key}:Get*", "${statement.key}:List*"]
      resources = statement.value
    }
  }

  statement {
    sid = "ReadWhatHasNoName"
    actions = [
      "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeManagedPrefixLists",
      "ec2:DescribeVpcs", "ec2:DescribeSubnets", "kms:DescribeKey", "kms:ListAliases",
      "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags",
      "ecs:DescribeTaskDefinition", "lambda:GetEventSourceMapping", "lambda:ListEventSourceMappings",
      "logs:DescribeLogGroups", "cloudwatch:DescribeAlarms", "iam:GetOpenIDConnectProvider",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "ReadTerraformState"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = local.state
  }
}

resource "aws_iam_role_policy" "deploy" {
  name   = aws_iam_role.github["deploy"].name
  role   = aws_iam_role.github["deploy"].id
  policy = data.aws_iam_policy_document.deploy.json
}

resource "aws_iam_role_policy" "plan" {
  name   = aws_iam_role.github["plan"].name
  role   = aws_iam_role.github["plan"].id
  policy = data.aws_iam_policy_document.plan.json
}

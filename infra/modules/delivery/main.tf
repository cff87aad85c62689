# What GitHub Actions deploys with: the account's GitHub OIDC provider and two roles, assumable only
# by this repository's workflows with short-lived tokens (no stored keys):
# - deploy: the environment's deploy job (GitHub environment <env>, required reviewers on prod);
#   manages the pipeline's resources, all named from settings deploy.name;
# - plan: pull requests and the environment's plan job (GitHub environment <env>-plan); reads only.
# And the permissions boundary of every other role of the pipeline: the deploy role creates and
# changes roles only under it, so no role it makes can do more than the boundary allows, and it
# cannot change the GitHub roles or the boundary itself.
# The roles and the boundary exist before the first workflow run: an administrator applies this
# module once, and again whenever it changes (docs/deploy.md).

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
    ecs            = ["${local.arn}:ecs:${local.region}:${local.account}:cluster/${local.name}-*", "${local.arn}:ecs:${local.region}:${local.account}:service/${local.name}-*/*", "${local.arn}:ecs:${local.region}:${local.account}:task-definition/${local.name}-*"]
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
  # What deploy manages whole and the boundary allows: every owned service but IAM, whose role
  # writes go through the boundary (statements on roles below).
  managed  = { for service, arns in local.owned : service => arns if service != "iam" }
  roles    = "${local.arn}:iam::${local.account}:role/${local.name}-*"
  github   = "${local.arn}:iam::${local.account}:role/${local.name}-github-*"
  boundary = "${local.arn}:iam::${local.account}:policy/${local.name}-pipeline-boundary"
  state    = ["${local.arn}:s3:::${var.state_bucket}", "${local.arn}:s3:::${var.state_bucket}/*"]
  # The Lambda zips (modules/lambda_function): the plan role refreshes them (HeadObject needs
  # s3:GetObject).
  artifacts = "${local.arn}:s3:::${var.artifacts_bucket}/lambda/*"
  # Keys and security groups have no name to match: the provider's default_tags put
  # project = settings deploy.name on everything the pipeline creates.
  keys            = "${local.arn}:kms:${local.region}:${local.account}:key/*"
  groups          = "${local.arn}:ec2:${local.region}:${local.account}:security-group/*"
  group_rules     = "${local.arn}:ec2:${local.region}:${local.account}:security-group-rule/*"
  database_groups = [for id in var.database_security_group_ids : "${local.arn}:ec2:${local.region}:${local.account}:security-group/${id}"]
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
  #checkov:skip=CKV_AWS_109:Terraform manages the pipeline's own roles, only under the permissions boundary (statement ChangeRolesOnlyUnderTheBoundary), and the key it creates (tag conditions).
  #checkov:skip=CKV_AWS_111:Every write is limited to resources named from settings deploy.name or tagged project = deploy.name, except the few AWS grants only on "*" (statement CreateWhatHasNoNameYet).
  #checkov:skip=CKV_AWS_356:"*" only for actions AWS grants on no narrower resource (CreateWhatHasNoNameYet, CreateTheKeyTagged) and for the Denies.
  dynamic "statement" {
    for_each = local.managed
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

  # Reads and the changes that grant nothing: a role's permissions come only from its policies,
  # which change only under the boundary (next statement).
  statement {
    sid = "ManageThePipelinesRoles"
    actions = [
      "iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole", "iam:ListRoleTags", "iam:DeleteRole", "iam:UpdateRole",
      "iam:UpdateRoleDescription", "iam:UpdateAssumeRolePolicy", "iam:TagRole", "iam:UntagRole",
    ]
    resources = [local.roles]
  }

  # A role is created, and its policies or boundary changed, only if the boundary is its
  # permissions boundary: what deploy creates can never do more than the boundary allows.
  statement {
    sid = "ChangeRolesOnlyUnderTheBoundary"
    actions = [
      "iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy",
      "iam:DetachRolePolicy", "iam:PutRolePermissionsBoundary",
    ]
    resources = [local.roles]
    condition {
      test     = "StringEquals"
      variable = "iam:PermissionsBoundary"
      values   = [local.boundary]
    }
  }

  statement {
    sid       = "PassOnlyThePipelinesRoles"
    actions   = ["iam:PassRole"]
    resources = [local.roles]
  }

  # Plans refresh the boundary; only the administrator changes it.
  statement {
    sid       = "ReadTheBoundary"
    actions   = ["iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListPolicyVersions", "iam:ListPolicyTags"]
    resources = [local.boundary]
  }

  # A Deny may use wildcards: it only takes permissions away. Deploy cannot change (or pass) the
  # GitHub roles, its own included, nor lift or rewrite the boundary.
  statement {
    sid    = "NeverChangeTheGitHubRoles"
    effect = "Deny"
    actions = [
      "iam:Create*", "iam:Delete*", "iam:Put*", "iam:Attach*", "iam:Detach*", "iam:Update*",
      "iam:Tag*", "iam:Untag*", "iam:PassRole",
    ]
    resources = [local.github]
  }

  statement {
    sid       = "NeverLiftABoundary"
    effect    = "Deny"
    actions   = ["iam:DeleteRolePermissionsBoundary"]
    resources = ["*"]
  }

  statement {
    sid    = "NeverChangeTheBoundary"
    effect = "Deny"
    actions = [
      "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
      "iam:SetDefaultPolicyVersion", "iam:TagPolicy", "iam:UntagPolicy",
    ]
    resources = [local.boundary]
  }

  # Terraform creates the secrets empty and never reads a value.
  statement {
    sid       = "NeverReadSecretValues"
    effect    = "Deny"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["*"]
  }

  # AWS grants these on no narrower resource: task definitions and event source mappings are
  # registered account-wide, the rest are account-wide reads.
  statement {
    sid = "CreateWhatHasNoNameYet"
    actions = [
      "kms:ListAliases", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
      "kms:ListResourceTags",
      "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeManagedPrefixLists",
      "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeNetworkInterfaces",
      "ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition", "ecs:DescribeTaskDefinition",
      "lambda:CreateEventSourceMapping", "lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping",
      "lambda:DeleteEventSourceMapping", "lambda:ListEventSourceMappings",
      "ecr:GetAuthorizationToken", "logs:DescribeLogGroups", "cloudwatch:DescribeAlarms",
    ]
    resources = ["*"]
  }

  # A key has no ARN before it exists: it is created only carrying the project tag. Tagging at
  # creation needs kms:TagResource on every key, so it carries the same condition; AWS offers no
  # condition that limits it to creation (it would let deploy tag another key of the account).
  statement {
    sid       = "CreateTheKeyTagged"
    actions   = ["kms:CreateKey", "kms:TagResource"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/project"
      values   = [local.name]
    }
  }

  statement {
    sid = "ManageThePipelinesKey"
    actions = [
      "kms:EnableKeyRotation", "kms:PutKeyPolicy", "kms:TagResource", "kms:ScheduleKeyDeletion",
      "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant",
      "kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias",
    ]
    resources = [local.keys]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/project"
      values   = [local.name]
    }
  }

  # An alias is checked on the alias and on its key (statement above).
  statement {
    sid       = "ManageThePipelinesKeyAlias"
    actions   = ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"]
    resources = ["${local.arn}:kms:${local.region}:${local.account}:alias/${local.name}"]
  }

  # A security group has no ARN before it exists either: created only carrying the project tag,
  # in any VPC (CreateSecurityGroup is checked on the VPC too).
  statement {
    sid       = "CreateSecurityGroupsTagged"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = [local.groups]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/project"
      values   = [local.name]
    }
  }

  statement {
    sid       = "CreateSecurityGroupsInTheVpc"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["${local.arn}:ec2:${local.region}:${local.account}:vpc/*"]
  }

  # A new rule is checked as a resource of its own, tagged in the request.
  statement {
    sid       = "CreateSecurityGroupRulesTagged"
    actions   = ["ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress"]
    resources = [local.group_rules]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/project"
      values   = [local.name]
    }
  }

  statement {
    sid       = "TagSecurityGroupsAndRulesAtCreation"
    actions   = ["ec2:CreateTags"]
    resources = [local.groups, local.group_rules]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateSecurityGroup", "AuthorizeSecurityGroupEgress", "AuthorizeSecurityGroupIngress"]
    }
  }

  statement {
    sid = "ManageThePipelinesSecurityGroupsAndRules"
    actions = [
      "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:ModifySecurityGroupRules",
      "ec2:CreateTags", "ec2:DeleteTags",
    ]
    resources = [local.groups, local.group_rules]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/project"
      values   = [local.name]
    }
  }

  # The databases' groups are not the pipeline's: Terraform adds its ingress rules to them
  # (modules/network_access), on these groups only.
  statement {
    sid       = "ChangeTheDatabaseGroupsIngressRules"
    actions   = ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:ModifySecurityGroupRules"]
    resources = local.database_groups
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
    sid       = "ReadTheBoundary"
    actions   = ["iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListPolicyVersions", "iam:ListPolicyTags"]
    resources = [local.boundary]
  }

  statement {
    sid       = "ReadTerraformState"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = local.state
  }

  # Get* above includes reading the data itself: secret values, stream records, log events, lake
  # objects. A plan reads none of it; only the state and the Lambda zips it refreshes.
  statement {
    sid    = "NeverReadTheData"
    effect = "Deny"
    actions = [
      "secretsmanager:GetSecretValue", "kinesis:GetRecords", "kinesis:GetShardIterator",
      "kinesis:SubscribeToShard", "logs:GetLogEvents", "logs:FilterLogEvents", "logs:GetLogRecord",
      "s3:GetObject", "s3:GetObjectVersion",
    ]
    not_resources = concat(local.state, [local.artifacts])
  }
}

# The permissions boundary of every role the pipeline creates (modules lambda_function, capture):
# what any of them may ever do, whatever its own policies say. The pipeline's services on what it
# owns (as the deploy role), no IAM but passing its own roles (the source check's schedule passes
# the task's roles), and what the runtime roles need account-wide.
data "aws_iam_policy_document" "boundary" {
  #checkov:skip=CKV_AWS_111:A boundary only caps: writes are limited to resources named from settings deploy.name or tagged project = deploy.name, except what AWS grants only on "*".
  #checkov:skip=CKV_AWS_356:"*" only for actions AWS grants on no narrower resource (statement RuntimeActionsOnlyGrantedOnStar).
  dynamic "statement" {
    for_each = local.managed
    content {
      sid       = "Bound${title(statement.key)}"
      actions   = ["${statement.key}:*"]
      resources = statement.value
    }
  }

  statement {
    sid       = "PassOnlyThePipelinesRoles"
    actions   = ["iam:PassRole"]
    resources = [local.roles]
  }

  # Metrics, tracing, registry login and a VPC function's network interfaces: AWS grants these on
  # no narrower resource.
  statement {
    sid = "RuntimeActionsOnlyGrantedOnStar"
    actions = [
      "cloudwatch:PutMetricData", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
      "ecr:GetAuthorizationToken", "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
      "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "UseThePipelinesKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.keys]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/project"
      values   = [local.name]
    }
  }
}

resource "aws_iam_policy" "boundary" {
  name        = "${local.name}-pipeline-boundary"
  description = "Permissions boundary of every role of the ${local.name} pipeline but the GitHub roles"
  policy      = data.aws_iam_policy_document.boundary.json
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

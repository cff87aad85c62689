# `terraform test` of an environment root (linked from each envs/<name>/): a full plan against a
# mocked AWS provider, so every module, expression and reference is evaluated without an account.
# infra/terraform-check.sh runs it with artifacts_root pointing at placeholder Lambda zips.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-2" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  vpc_id                         = "vpc-0123456789abcdef0"
  private_subnet_ids             = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  source_db_security_group_id    = "sg-0123456789abcdef0"
  warehouse_db_security_group_id = "sg-0123456789abcdef1"
  source_db_instance_id          = "totesys"
  alarm_emails                   = ["data-team@example.com"]
  capture_image_tag              = "0123456789abcdef0123456789abcdef01234567"
  github_repository              = "example/totes-cdc"
  state_bucket                   = "example-terraform-state"
}

run "plan" {
  command = plan

  assert {
    condition     = output.capture_service == "totes-cdc-capture"
    error_message = "the capture service is not named from settings.json"
  }

  assert {
    condition     = output.dashboard == "totes-cdc"
    error_message = "the dashboard is not named from settings.json"
  }
}

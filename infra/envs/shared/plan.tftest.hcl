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

  assert {
    condition     = output.stream_processor_stream_consumer_arn == null
    error_message = "an enhanced fan-out consumer is registered though the option is off"
  }
}

run "stream_processor_reads_through_its_consumer_with_enhanced_fan_out" {
  command = plan

  variables {
    stream_enhanced_fan_out = true
  }

  override_resource {
    target          = module.pipeline.module.stream_processor.aws_kinesis_stream_consumer.processor
    override_during = plan
    values = {
      arn = "arn:aws:kinesis:eu-west-2:111122223333:stream/totes-cdc-changes/consumer/totes-cdc-stream-processor:1732870000"
    }
  }

  assert {
    condition     = output.stream_processor_stream_consumer_arn == "arn:aws:kinesis:eu-west-2:111122223333:stream/totes-cdc-changes/consumer/totes-cdc-stream-processor:1732870000"
    error_message = "no enhanced fan-out consumer is registered for the stream processor"
  }

  assert {
    condition     = output.stream_processor_event_source_arn == output.stream_processor_stream_consumer_arn
    error_message = "the event source mapping does not read through the enhanced fan-out consumer"
  }
}

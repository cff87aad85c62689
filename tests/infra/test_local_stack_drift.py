"""The emulated resources of the local stack are the ones the Terraform declares.

Each name below is resolved from the settings path the Terraform reads it from (parsed out of the
.tf files), then looked up in the emulator after `create_resources`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.hcl import module
from totes_cdc.settings import settings
from totes_ops.stack.emulator import Emulator

pytestmark = pytest.mark.integration


def from_settings(expression: str) -> Any:
    """The value of ``${var.settings.a.b}`` (the leading settings reference of an expression)."""
    match = re.match(r"\$\{var\.settings\.([\w.]+)\}", expression)
    assert match, expression
    value: Any = settings()
    for part in match.group(1).split("."):
        value = value[part]
    return value


def test_emulator_holds_what_the_terraform_declares(aws: Emulator) -> None:
    stream = from_settings(module("stream").resources("aws_kinesis_stream")["changes"]["name"])
    summary = aws.client("kinesis").describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    shards = module("stream").resources("aws_kinesis_stream")["changes"]["shard_count"]
    assert summary["OpenShardCount"] == settings()["stream"]["shard_count"]
    assert "var.settings.stream.shard_count" in shards

    buckets = {b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]}
    for expression in module("storage").locals["data_buckets"].values():
        if "settings.buckets." in expression:  # the deploy-only buckets have no local twin
            assert from_settings(expression) in buckets

    sqs = aws.client("sqs")
    queues = module("queues").resources("aws_sqs_queue")
    for queue in queues.values():
        assert sqs.get_queue_url(QueueName=from_settings(queue["name"]))["QueueUrl"]
    files_url = sqs.get_queue_url(QueueName=from_settings(queues["processed_files"]["name"]))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=files_url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == from_settings(
        queues["processed_files"]["visibility_timeout_seconds"])
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == (
        settings()["loader_mapping"]["max_receive_count"])

    notification = module("queues").resources("aws_s3_bucket_notification")["processed"]["queue"][0]
    processed = settings()["buckets"]["processed"]
    rules = aws.client("s3").get_bucket_notification_configuration(Bucket=processed)[
        "QueueConfigurations"][0]["Filter"]["Key"]["FilterRules"]
    assert {r["Name"]: r["Value"] for r in rules} == {
        "prefix": from_settings(notification["filter_prefix"]),
        "suffix": from_settings(notification["filter_suffix"])}

    topic = from_settings(module("monitoring").resources("aws_sns_topic")["alarms"]["name"])
    topics = [t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]]
    assert any(arn.endswith(f":{topic}") for arn in topics)

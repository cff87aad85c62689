"""The AWS emulator (moto in server mode, its own process on 127.0.0.1, with the fix of
:mod:`totes_ops.stack.emulator_server`) and the resources in it.

Components reach it exactly as they reach AWS: boto3 with ``AWS_ENDPOINT_URL`` pointing here
(see :func:`client_env`), so no component has an emulator code path.
The resources are created from ``infra/settings.json``, the same names Terraform declares.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings
from totes_ops.stack.ports import ensure_port_free, free_port, wait_until_answering

# Credentials the emulator accepts; they grant nothing anywhere else.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # nosec B105


def client_env(endpoint: str) -> dict[str, str]:
    """Environment that points boto3 (in this or a child process) at the emulator."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": settings()["region"],
            **EMULATOR_CREDENTIALS}


@dataclass
class Emulator:
    """A moto server we started; stop() ends it (and only it)."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        ensure_port_free(self.port, "the AWS emulator")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "totes_ops.stack.emulator_server", "-H", "127.0.0.1",
             "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process = self.process
        if not wait_until_answering(f"{self.endpoint}/moto-api/", timeout, lambda: process.poll() is None):
            self.stop()
            raise ConfigError(f"the AWS emulator did not start on {self.endpoint}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self, service: str) -> Any:
        return emulator_client(self.endpoint, service)


def emulator_client(endpoint: str, service: str, **kwargs: Any) -> Any:
    """A boto3 client for ``service`` at ``endpoint`` (the emulator, or a proxy in front of it)."""
    return boto3.client(service, endpoint_url=endpoint, region_name=settings()["region"],
                        aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], **kwargs)


def create_resources(emulator: Emulator, secrets_values: Mapping[str, Mapping[str, Any]]) -> None:
    """Create the stream, buckets, queues, notification, topic, secrets of settings.json and the
    change event's schema in the Glue Schema Registry.

    ``secrets_values`` maps a key of ``settings()["secrets"]`` to the JSON the secret holds.
    Idempotent: existing resources are left as they are.
    """
    cfg = settings()
    kinesis = emulator.client("kinesis")
    stream = cfg["stream"]["name"]
    if stream not in kinesis.list_streams()["StreamNames"]:
        kinesis.create_stream(StreamName=stream, ShardCount=cfg["stream"]["shard_count"])
        kinesis.get_waiter("stream_exists").wait(StreamName=stream)

    s3 = emulator.client("s3")
    for bucket in cfg["buckets"].values():
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": cfg["region"]})

    sqs = emulator.client("sqs")
    queues = cfg["queues"]
    dlq_url = sqs.create_queue(QueueName=queues["processed_files_dlq"])["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    # Both queues of files: the same visibility timeout and redrive to the same DLQ (queues module).
    files_url, _ = (sqs.create_queue(QueueName=queues[name], Attributes={
        "VisibilityTimeout": str(cfg["loader_mapping"]["visibility_timeout_seconds"]),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": cfg["loader_mapping"]["max_receive_count"]}),
    })["QueueUrl"] for name in ("processed_files", "snapshot_files"))
    sqs.create_queue(QueueName=queues["stream_failures"])
    files_arn = sqs.get_queue_attributes(QueueUrl=files_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=cfg["buckets"]["processed"],
        NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": files_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [
                {"Name": "prefix", "Value": cfg["prefixes"]["processed"]},
                {"Name": "suffix", "Value": cfg["suffixes"]["processed"]}]}},
        }]})

    emulator.client("sns").create_topic(Name=cfg["alarm_topic"])
    from totes_ops.lake import register_schema

    register_schema(emulator.client("glue"))

    sm = emulator.client("secretsmanager")
    for key, value in secrets_values.items():
        name = cfg["secrets"][key]
        try:
            sm.create_secret(Name=name, SecretString=json.dumps(dict(value)))
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=json.dumps(dict(value)))


def apply_client_env(endpoint: str) -> None:
    """Point this process's boto3 at the emulator (tests and the stack's own calls)."""
    os.environ.update(client_env(endpoint))

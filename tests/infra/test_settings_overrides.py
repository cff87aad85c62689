"""$TOTES_CDC_SETTINGS_OVERRIDES: how deployed processes learn the environment's bucket names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stream_processors import handler as processor_handler
from tests.events import Context, aggregated, lambda_event, sales_orders
from totes_cdc.errors import ConfigError
from totes_cdc.settings import OVERRIDES_ENV, settings
from warehouse_loader.apply import table_of


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(OVERRIDES_ENV, raising=False)
    settings.cache_clear()
    yield
    monkeypatch.delenv(OVERRIDES_ENV, raising=False)
    settings.cache_clear()  # the next test reads the file as it is


def test_without_overrides_the_file_is_read_as_is() -> None:
    assert settings()["buckets"]["raw"] == "totes-cdc-raw"


def test_overrides_merge_over_the_file_section_by_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDES_ENV, json.dumps({"buckets": {"raw": "totes-cdc-raw-prod-1"},
                                                  "metrics_namespace": "Other"}))
    cfg = settings()
    assert cfg["buckets"] == {"raw": "totes-cdc-raw-prod-1", "processed": "totes-cdc-processed",
                              "dead_letter": "totes-cdc-dead-letter"}
    assert cfg["metrics_namespace"] == "Other"
    assert cfg["stream"]["name"] == "totes-cdc-changes"


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "is not valid JSON"),
    ('["buckets"]', "must be a JSON object"),
])
def test_bad_overrides_are_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv(OVERRIDES_ENV, value)
    with pytest.raises(ConfigError, match=message):
        settings()


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The three buckets, mocked in-process, for the stream processor's handler to write to."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", settings()["region"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    processor_handler._s3.cache_clear()
    with mock_aws():
        client = boto3.client("s3")
        for bucket in settings()["buckets"].values():
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={
                "LocationConstraint": settings()["region"]})
        yield client
    processor_handler._s3.cache_clear()


@pytest.mark.parametrize("environment", [
    {"TOTES_CDC_PROCESSED_PREFIX": "elsewhere/"},
    {OVERRIDES_ENV: json.dumps({"prefixes": {"processed": "elsewhere/"}})},
], ids=["per-field variable", "settings override"])
def test_the_loader_takes_every_file_the_processor_writes(
        monkeypatch: pytest.MonkeyPatch, buckets: Any, environment: dict[str, str]) -> None:
    """The processor once read its prefixes from per-field variables that the loader and the S3
    notification (Terraform, the local stack: settings.json) never read: a processed prefix set
    that way made the loader dead-letter every file, or never hear of it."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    processor_handler.handler(lambda_event(aggregated(sales_orders(2))), Context())
    cfg = settings()
    [key] = [o["Key"] for o in buckets.list_objects_v2(Bucket=cfg["buckets"]["processed"])["Contents"]]
    assert key.startswith(cfg["prefixes"]["processed"]) and key.endswith(cfg["suffixes"]["processed"])
    assert table_of(key) == "sales_order"

"""The handler's decisions without a warehouse: credentials, dead-lettering, retries (moto mocks)."""

from __future__ import annotations

import dataclasses
import json

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from moto import mock_aws

from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings
from warehouse_loader import handler
from warehouse_loader.apply import FileResult
from warehouse_loader.config import LoaderConfig
from warehouse_loader.errors import BadFileError, RetryableLoadError
from warehouse_loader.handler import Loader, warehouse_dsn
from warehouse_loader.migrate import Migration

KEY = "processed/public.design/date=2024-11-15/s-1-1.parquet"


@pytest.fixture
def s3(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", handler.DSN_ENV, handler.SECRET_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", settings()["region"])
    parameters.clear_caches()  # powertools keeps its Secrets Manager client across calls
    with mock_aws():
        client = boto3.client("s3")
        for bucket in (settings()["buckets"]["processed"], settings()["buckets"]["dead_letter"]):
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={
                "LocationConstraint": settings()["region"]})
        client.put_object(Bucket=settings()["buckets"]["processed"], Key=KEY, Body=b"data")
        yield client
    parameters.clear_caches()


class FakeConnection:
    closed = False

    def close(self) -> None:
        self.closed = True


def message(key: str = KEY) -> SQSRecord:
    body = {"Records": [{"s3": {"bucket": {"name": settings()["buckets"]["processed"]},
                                "object": {"key": key.replace("=", "%3D")}}}]}
    return SQSRecord({"messageId": "m", "body": json.dumps(body)})


def loader(s3, monkeypatch, outcome) -> tuple[Loader, list[tuple[str, str, float]]]:
    published: list[tuple[str, str, float]] = []

    def apply_file(conn, key, data, fetch):
        assert (key, data) == (KEY, b"data")
        assert fetch(KEY) == b"data"  # a marker's listed files come from the same bucket
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(handler, "apply_file", apply_file)
    monkeypatch.setattr(handler, "connect", lambda dsn, what: FakeConnection())
    monkeypatch.setattr(handler, "pending", lambda conn: [])
    config = LoaderConfig.from_settings(lambda: "dbname=x")
    return Loader(config, lambda *m: published.append(m), s3), published


def test_dsn_comes_from_the_environment_first(monkeypatch, s3):
    monkeypatch.setenv(handler.DSN_ENV, "host=h dbname=d")
    assert warehouse_dsn() == "host=h dbname=d"


def test_dsn_is_built_from_the_secret(monkeypatch, s3):
    boto3.client("secretsmanager").create_secret(Name="wh", SecretString=json.dumps({
        "host": "db.example", "port": 5432, "dbname": "warehouse", "username": "loader",
        "password": "p w'd", "sslmode": "verify-full"}))
    monkeypatch.setenv(handler.SECRET_ENV, "wh")
    dsn = warehouse_dsn()
    assert "host=db.example" in dsn and "sslmode=verify-full" in dsn and "user=loader" in dsn
    assert "password='p w\\'d'" in dsn

    boto3.client("secretsmanager").create_secret(Name="bad", SecretString=json.dumps({"host": "h"}))
    monkeypatch.setenv(handler.SECRET_ENV, "bad")
    with pytest.raises(ConfigError, match="the database secret 'bad' has no 'dbname' field"):
        warehouse_dsn()


def test_no_warehouse_configured_is_a_config_error(s3):
    with pytest.raises(ConfigError, match="TOTES_CDC_WAREHOUSE_DSN or TOTES_CDC_WAREHOUSE_SECRET"):
        warehouse_dsn()


def test_a_loaded_file_publishes_its_metrics(s3, monkeypatch):
    ldr, published = loader(s3, monkeypatch, FileResult(KEY, "design", 3, 2, 120.5))
    ldr.handle_record(message())
    assert published == [("FilesLoaded", "Count", 1), ("FactRowsAppended", "Count", 2),
                         ("EndToEndLatencyMs", "Milliseconds", 120.5)]


def test_a_bad_file_is_dead_lettered_with_its_reason(s3, monkeypatch):
    ldr, published = loader(s3, monkeypatch, BadFileError(KEY, "column 'x' is missing"))
    ldr.handle_record(message())
    dead = settings()["buckets"]["dead_letter"]
    target = settings()["prefixes"]["dead_letter_files"] + KEY
    assert s3.get_object(Bucket=dead, Key=target)["Body"].read() == b"data"
    record = json.loads(s3.get_object(Bucket=dead, Key=f"{target}.error.json")["Body"].read())
    assert record["reason"] == "column 'x' is missing" and record["key"] == KEY
    assert published == [("FilesDeadLettered", "Count", 1)]


def test_a_missing_object_leaves_a_dead_letter_record(s3, monkeypatch):
    ldr, _ = loader(s3, monkeypatch, None)
    ldr.handle_record(message(KEY.replace("s-1-1", "gone")))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings()["buckets"]["dead_letter"])["Contents"]]
    assert keys == [settings()["prefixes"]["dead_letter_files"] + KEY.replace("s-1-1", "gone")
                    + ".error.json"]


def test_retryable_failures_fail_the_message_and_drop_the_connection(s3, monkeypatch):
    ldr, published = loader(s3, monkeypatch, RetryableLoadError("server closed the connection"))
    conn = ldr._connection()
    with pytest.raises(RetryableLoadError):
        ldr.handle_record(message())
    assert conn.closed and ldr._conn is None and published == []


def test_an_unreachable_warehouse_is_retryable(s3, monkeypatch):
    def refuse(dsn, what):
        raise ConfigError("cannot connect to the warehouse database u@h:1/d")

    monkeypatch.setattr(handler, "connect", refuse)
    with pytest.raises(RetryableLoadError, match="cannot connect"):
        Loader(LoaderConfig.from_settings(lambda: "dbname=x"), lambda *m: None, s3).load(
            settings()["buckets"]["processed"], KEY)


def test_s3_failures_are_retryable(s3, monkeypatch):
    ldr, _ = loader(s3, monkeypatch, None)
    with pytest.raises(RetryableLoadError, match="cannot read s3://no-such-bucket"):
        ldr.load("no-such-bucket", KEY)
    ldr.config = dataclasses.replace(ldr.config, dead_letter_bucket="no-such-bucket")
    with pytest.raises(RetryableLoadError, match="cannot dead-letter"):
        ldr.dead_letter("b", KEY, b"x", "reason")


@pytest.mark.parametrize("body", ["not json", "[1]", '{"Records": "x"}', "{}"])
def test_messages_that_are_not_s3_notifications_are_dead_lettered_and_the_queue_moves_on(
        s3, monkeypatch, body):
    ldr, published = loader(s3, monkeypatch, None)
    ldr.handle_record(SQSRecord({"messageId": "m", "body": body,
                                 "eventSourceARN": "arn:aws:sqs:eu-west-2:123456789012:files"}))
    target = f"{ldr.config.dead_letter_prefix}messages/m"
    bucket = ldr.config.dead_letter_bucket
    kept = s3.get_object(Bucket=bucket, Key=target)["Body"].read()
    why = json.loads(s3.get_object(Bucket=bucket, Key=f"{target}.error.json")["Body"].read())
    assert kept == body.encode()
    assert (why["bucket"], why["reason"]) == ("files", "the message is not an S3 notification")
    assert [name for name, *_ in published] == ["FilesDeadLettered"]


def test_batch_reports_only_the_failed_messages(s3, monkeypatch):
    ldr, _ = loader(s3, monkeypatch, RetryableLoadError("down"))
    ok = {"messageId": "ok", "body": json.dumps({"Event": "s3:TestEvent"})}
    bad = {"messageId": "bad", "body": message().raw_event["body"]}
    assert ldr.handle_batch({"Records": [ok, bad]}) == {
        "batchItemFailures": [{"itemIdentifier": "bad"}]}


SNAPSHOT_KEY = "processed/public.design/date=2024-11-15/snapshot-0000000001000000-000003.parquet"


def arriving(key: str, queue_url: str) -> SQSRecord:
    """``message(key)`` as the mapping of the queue at ``queue_url`` delivers it."""
    name = queue_url.rsplit("/", 1)[-1]
    arn = f"arn:aws:sqs:eu-west-2:123456789012:{name}"
    return SQSRecord({**message(key).raw_event, "eventSourceARN": arn})


def test_a_warehouse_behind_the_loaders_migrations_is_retryable_and_names_the_command(s3, monkeypatch):
    """The files wait in the queue (the message fails) until the schema is migrated."""
    opened: list[FakeConnection] = []
    monkeypatch.setattr(handler, "connect", lambda dsn, what: opened.append(FakeConnection()) or opened[-1])
    monkeypatch.setattr(handler, "pending", lambda conn: [Migration(24, "fact_one_version_index", "")])
    monkeypatch.setattr(handler, "apply_file", lambda *a, **k: pytest.fail("applied"))
    ldr = Loader(LoaderConfig.from_settings(lambda: "dbname=x"), lambda *m: None, s3)
    with pytest.raises(RetryableLoadError, match=r"lacks migrations 024_fact_one_version_index: "
                                                 r"run `totes-cdc warehouse migrate`"):
        ldr.handle_record(message())
    assert opened[0].closed and ldr._conn is None


@pytest.fixture
def queues(s3):
    sqs = boto3.client("sqs")
    names = settings()["queues"]
    return sqs, {role: sqs.create_queue(QueueName=names[role])["QueueUrl"]
                 for role in ("processed_files", "snapshot_files")}


def test_snapshot_files_are_passed_on_to_their_queue_and_applied_there(s3, monkeypatch, queues):
    """A snapshot read's file (or marker) announced on the stream's queue is sent, as announced, to
    the snapshot files' queue and not applied; from that queue it is applied. A stream batch's file
    is applied where it arrives."""
    sqs, urls = queues
    applied: list[str] = []
    monkeypatch.setattr(handler, "apply_file", lambda conn, key, data, fetch: applied.append(key) or
                        FileResult(key, "design", 1, 0, None))
    monkeypatch.setattr(handler, "connect", lambda dsn, what: FakeConnection())
    monkeypatch.setattr(handler, "pending", lambda conn: [])
    s3.put_object(Bucket=settings()["buckets"]["processed"], Key=SNAPSHOT_KEY, Body=b"data")
    config = LoaderConfig.from_settings(lambda: "dbname=x", snapshot_queue_url=urls["snapshot_files"])
    ldr = Loader(config, lambda *m: None, s3, sqs)

    ldr.handle_record(arriving(SNAPSHOT_KEY, urls["processed_files"]))
    assert applied == []
    passed = sqs.receive_message(QueueUrl=urls["snapshot_files"])["Messages"]
    assert [m["Body"] for m in passed] == [message(SNAPSHOT_KEY).body]

    ldr.handle_record(arriving(SNAPSHOT_KEY, urls["snapshot_files"]))
    ldr.handle_record(arriving(KEY, urls["processed_files"]))
    assert applied == [SNAPSHOT_KEY, KEY]
    # Without a snapshot queue configured every file is applied where it arrives.
    ldr.config = LoaderConfig.from_settings(lambda: "dbname=x")
    ldr.handle_record(message(SNAPSHOT_KEY))
    assert applied == [SNAPSHOT_KEY, KEY, SNAPSHOT_KEY]


def test_a_snapshot_file_that_cannot_be_passed_on_fails_its_message(s3, monkeypatch, queues):
    sqs, urls = queues
    monkeypatch.setattr(handler, "apply_file", lambda *a, **k: pytest.fail("applied"))
    gone = urls["snapshot_files"] + "-gone"
    config = LoaderConfig.from_settings(lambda: "dbname=x", snapshot_queue_url=gone)
    with pytest.raises(RetryableLoadError, match=f"cannot pass {SNAPSHOT_KEY} on to"):
        Loader(config, lambda *m: None, s3, sqs).handle_record(
            arriving(SNAPSHOT_KEY, urls["processed_files"]))

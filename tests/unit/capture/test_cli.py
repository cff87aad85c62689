"""The capture command line: configuration from arguments, environment and Secrets Manager."""

from __future__ import annotations

import json

import boto3
import psycopg2.extensions
import pytest
from moto import mock_aws

from capture.config import CaptureConfig
from totes_cdc.db import dsn_from_secret_name
from totes_cdc.errors import ConfigError
from totes_cdc.settings import OVERRIDES_ENV, settings
from totes_ops.cli import build_parser, main


def test_defaults_come_from_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", "host=h dbname=d")
    args = build_parser().parse_args(["capture", "--state-dir", str(tmp_path)])
    assert args.source_dsn == "host=h dbname=d" and args.stream == "totes-cdc-changes"
    config = CaptureConfig.from_settings(args.source_dsn, tmp_path, tables=None, heartbeat_seconds=None)
    assert config.tables[0] == "public.address" and len(config.tables) == 11
    assert config.slot == "totes_cdc" and config.heartbeat_seconds == 10.0


def test_no_source_is_a_config_error(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TOTES_CDC_SOURCE_DSN", raising=False)
    monkeypatch.delenv("TOTES_CDC_SOURCE_SECRET", raising=False)
    assert main(["capture", "--state-dir", str(tmp_path)]) == 2
    assert "no source database given" in capsys.readouterr().err


@mock_aws
def test_the_source_dsn_comes_from_its_secret():
    client = boto3.client("secretsmanager", region_name="eu-west-2")
    client.create_secret(Name="src", SecretString=json.dumps(
        {"host": "db.example", "port": 5433, "username": "u", "password": "p w", "dbname": "totesys"}))
    dsn = psycopg2.extensions.parse_dsn(dsn_from_secret_name("src", client))
    assert dsn == {"host": "db.example", "port": "5433", "user": "u", "password": "p w",
                   "dbname": "totesys", "sslmode": "require"}
    client.create_secret(Name="bad", SecretString=json.dumps({"host": "h"}))
    with pytest.raises(ConfigError, match="has no"):
        dsn_from_secret_name("bad", client)
    client.create_secret(Name="text", SecretString="host=h")
    with pytest.raises(ConfigError, match="is not JSON"):
        dsn_from_secret_name("text", client)
    with pytest.raises(ConfigError, match="cannot read the secret 'missing'"):
        dsn_from_secret_name("missing", client)


def test_no_aws_region_is_a_config_error_not_a_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", "host=127.0.0.1 port=1 dbname=d")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    assert main(["capture", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: capture: AWS: You must specify a region" in err and "Traceback" not in err
    assert "set AWS_DEFAULT_REGION" in err  # the variable botocore reads (it ignores AWS_REGION)


def test_a_state_store_that_is_not_one_exits_2_naming_it(monkeypatch, capsys, tmp_path):
    """argparse checks a default against nothing: $TOTES_CDC_STATE_STORE=S3 must not mean local."""
    monkeypatch.setenv("TOTES_CDC_SOURCE_DSN", "host=127.0.0.1 port=1 dbname=d")
    monkeypatch.setenv("TOTES_CDC_STATE_STORE", "S3")
    assert main(["capture", "--state-dir", str(tmp_path)]) == 2
    assert "state store 'S3' (--state-store, $TOTES_CDC_STATE_STORE) is not one of local, s3" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("capture_settings", "expected"), [
    ({"snapshot_workers": 0}, "capture setting snapshot_workers = 0 must be above 0"),
    ({"snapshot_workers": "four"}, "settings capture.snapshot_workers = 'four' cannot be read as int"),
    ({"heartbeat_seconds": None}, "settings capture.heartbeat_seconds = None cannot be read as float"),
])
def test_capture_settings_it_cannot_run_with_are_named(monkeypatch, capture_settings, expected, tmp_path):
    settings.cache_clear()
    monkeypatch.setenv(OVERRIDES_ENV, json.dumps({"capture": capture_settings}))
    try:
        with pytest.raises(ConfigError) as info:
            CaptureConfig.from_settings("host=h", tmp_path)
    finally:
        settings.cache_clear()
    assert expected in str(info.value)


def test_the_configuration_never_shows_the_source_dsn(tmp_path):
    config = CaptureConfig.from_settings("host=h user=u password=hunter2", tmp_path)
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)

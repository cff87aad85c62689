"""$TOTES_CDC_SETTINGS_OVERRIDES: how deployed processes learn the environment's bucket names."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from totes_cdc.errors import ConfigError
from totes_cdc.settings import OVERRIDES_ENV, settings


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

"""The pipeline's resource names and settings, read from ``infra/settings.json``.

That one file is read by Terraform (``jsondecode(file(...))``) and by the local stack, so the
emulated resources and the deployed ones cannot drift apart.

S3 bucket names are global, so each deployed environment's buckets carry a suffix; Terraform hands
the names it created to the deployed processes in ``$TOTES_CDC_SETTINGS_OVERRIDES`` (JSON whose
sections are merged over the file's).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from totes_cdc.errors import ConfigError

SETTINGS_PATH = Path(__file__).resolve().parent.parent / "infra" / "settings.json"
OVERRIDES_ENV = "TOTES_CDC_SETTINGS_OVERRIDES"


@cache
def settings() -> dict[str, Any]:
    """The parsed settings with any overrides applied (read once per process)."""
    with SETTINGS_PATH.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    try:
        overrides = json.loads(os.environ.get(OVERRIDES_ENV) or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"${OVERRIDES_ENV} is not valid JSON: {exc}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"${OVERRIDES_ENV} must be a JSON object of settings sections")
    for section, values in overrides.items():
        current = data.get(section)
        if isinstance(current, dict) and not isinstance(values, dict):
            raise ConfigError(f"${OVERRIDES_ENV}: {section} must be a JSON object of settings, as in "
                              f"infra/settings.json, not {json.dumps(values)}")
        data[section] = {**current, **values} if isinstance(current, dict) else values
    return data

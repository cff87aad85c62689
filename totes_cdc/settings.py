"""The pipeline's resource names and settings, read from ``infra/settings.json``.

That one file is read by Terraform (``jsondecode(file(...))``) and by the local stack, so the
emulated resources and the deployed ones cannot drift apart.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SETTINGS_PATH = Path(__file__).resolve().parent.parent / "infra" / "settings.json"


@cache
def settings() -> dict[str, Any]:
    """The parsed settings (read once per process)."""
    with SETTINGS_PATH.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data

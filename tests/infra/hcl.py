"""The Terraform under infra/, parsed with python-hcl2 into plain dicts, one per folder (module)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from totes_cdc.settings import SETTINGS_PATH

INFRA = SETTINGS_PATH.parent
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


@dataclass
class Module:
    """The blocks of one folder's .tf files: ``blocks["resource"]["aws_x"]["name"]`` is its body."""

    path: Path
    blocks: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def resources(self, kind: str) -> dict[str, Any]:
        return dict(self.blocks.get("resource", {}).get(kind, {}))

    def data(self, kind: str) -> dict[str, Any]:
        return dict(self.blocks.get("data", {}).get(kind, {}))

    @property
    def locals(self) -> dict[str, Any]:
        return dict(self.blocks.get("locals", {}))

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.blocks.get("module", {}))


def _merge(module: Module, parsed: dict[str, Any]) -> None:
    for kind, entries in parsed.items():
        for entry in entries:
            if kind in ("resource", "data"):
                for type_name, named in entry.items():
                    module.blocks.setdefault(kind, {}).setdefault(type_name, {}).update(named)
            else:  # locals, module, variable, output, terraform, provider
                target = module.blocks.setdefault(kind, {})
                if isinstance(entry, dict):
                    target.update(entry)


@cache
def modules() -> dict[str, Module]:
    """Every folder holding .tf files, keyed by its path relative to infra/ (``modules/stream``)."""
    found: dict[str, Module] = {}
    for tf in sorted(INFRA.rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        key = tf.parent.relative_to(INFRA).as_posix()
        module = found.setdefault(key, Module(tf.parent))
        text = tf.read_text(encoding="utf-8")
        module.text += text
        _merge(module, hcl2.loads(text, serialization_options=OPTIONS))
    return found


def module(name: str) -> Module:
    return modules()[f"modules/{name}"]


def ref(expression: str) -> str:
    """``${var.x}`` -> ``var.x``: the expression inside a bare interpolation."""
    match = re.fullmatch(r"\$\{(.*)\}", str(expression), re.S)
    assert match, f"{expression!r} is not a reference"
    return match.group(1)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of an aws_iam_policy_document, including ``dynamic "statement"`` ones."""
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        if "statement" in dynamic:
            found.extend(dynamic["statement"]["content"])
    return found

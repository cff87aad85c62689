"""The direction of imports between the project's packages (drawn in docs/architecture.md).

- the core (``totes_cdc``) imports nothing of the project but itself;
- a component (``capture``, ``stream_processors``, ``warehouse_loader``; the capture image's
  scripts in infra/docker count as capture's) imports only the core, and the capture image's
  entry point the source check of ``warehouse_loader`` besides;
- the local AWS emulation (``local_aws``) imports the core and the components whose Lambda
  triggers it stands in for, never the shell;
- the operator shell (``totes_ops`` and its ``dashboard``) may import anything.

Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = "totes_cdc"
COMPONENTS = ("capture", "stream_processors", "warehouse_loader")
EMULATION = "local_aws"
SHELL = ("totes_ops", "dashboard")
PROJECT = (CORE, *COMPONENTS, EMULATION, *SHELL)
# What each layer may import of the project (besides itself).
ALLOWED = {CORE: set(), EMULATION: {CORE, *COMPONENTS}, **{c: {CORE} for c in COMPONENTS},
           **{s: set(PROJECT) for s in SHELL}}
# The capture image: capture's scripts, its entry point also runs the warehouse's source check.
IMAGE = {"infra/docker/capture_health.py": {CORE},
         "infra/docker/entrypoint.py": {CORE, "capture", "warehouse_loader.source_check"}}


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (absolute or relative, at any depth)."""
    found: set[str] = set()
    package = path.relative_to(ROOT).parent.as_posix().replace("/", ".")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PROJECT}


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == rule or name.startswith(f"{rule}.") for rule in rules)


def violations() -> list[str]:
    found = []
    for layer in PROJECT:
        for path in sorted((ROOT / layer).rglob("*.py")):
            rules = ALLOWED[layer] | {layer}
            found += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(imports(path))
                      if not allowed(name, rules)]
    for file, rules in IMAGE.items():
        found += [f"{file} imports {name}" for name in sorted(imports(ROOT / file))
                  if not allowed(name, rules)]
    return found


def test_each_package_imports_only_what_its_layer_may() -> None:
    assert violations() == []


def test_the_check_sees_an_upward_import_even_inside_a_function(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = tmp_path / CORE
    core.mkdir()
    (core / "bad.py").write_text("def f():\n    from capture import service\n    from . import errors\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports(core / "bad.py") == {"capture.service", "totes_cdc.errors"}
    for layer in PROJECT[1:]:
        (tmp_path / layer).mkdir()
    (tmp_path / "infra" / "docker").mkdir(parents=True)
    for file in IMAGE:
        (tmp_path / file).write_text("")
    assert violations() == ["totes_cdc/bad.py imports capture.service"]

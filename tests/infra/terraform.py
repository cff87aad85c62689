"""Terraform run for the tests: the monitoring module planned offline, its alarms and dashboard as
Terraform evaluates them (``terraform show -json``), not as HCL text.

The AWS provider comes from a filesystem mirror when one is installed ($TF_PLUGIN_DIR, or the
places infra/terraform-check.sh looks), else from the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.hcl import INFRA

MIRRORS = ("/opt/tf-plugins", "/usr/local/share/terraform/plugins", "/usr/share/terraform/plugins",
           "~/.terraform.d/plugins")

# A root that instantiates only the monitoring module. The provider is configured offline: planning
# these resources and the aws_region data source needs no AWS call.
ROOT = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
provider "aws" {
  region                      = local.settings.region
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
locals {
  settings = jsondecode(file("%(settings)s"))
  deploy   = local.settings.deploy
}
module "monitoring" {
  source       = "%(module)s"
  settings     = local.settings
  name         = local.deploy.name
  kms_key_arn  = "arn:aws:kms:eu-west-2:111122223333:key/00000000-0000-0000-0000-000000000000"
  alarm_emails = []
  stream_name  = local.settings.stream.name
  functions = {
    stream_processor = { name = local.deploy.functions.stream_processor.name, timeout_seconds = 120 }
    loader           = { name = local.deploy.functions.loader.name, timeout_seconds = 300 }
  }
  queue_names           = local.settings.queues
  source_db_instance_id = "totesys"
  capture_cluster_name  = local.deploy.capture_service
  capture_service_name  = local.deploy.capture_service
}
"""


def plugin_dir() -> Path | None:
    """A filesystem mirror holding the AWS provider, if this machine has one."""
    candidates = [os.environ.get("TF_PLUGIN_DIR", ""), *MIRRORS]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser()
        if (path / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return path
    return None


def init_args() -> list[str]:
    mirror = plugin_dir()
    return ["terraform", "init", "-backend=false", "-input=false", "-no-color",
            *([f"-plugin-dir={mirror}"] if mirror else [])]


@dataclass(frozen=True)
class Monitoring:
    alarms: dict[str, dict[str, Any]]  # alarm key -> the planned aws_cloudwatch_metric_alarm values
    dashboard: dict[str, Any]  # the planned dashboard body


def plan_monitoring(workdir: Path, settings_path: Path) -> Monitoring:
    """Plan the monitoring module with ``settings_path`` as its settings file."""
    (workdir / "main.tf").write_text(ROOT % {"settings": settings_path.as_posix(),
                                             "module": (INFRA / "modules" / "monitoring").as_posix()})
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": os.devnull,
           "TF_DATA_DIR": str(workdir / ".terraform")}
    for args in (init_args(), ["terraform", "plan", "-refresh=false", "-input=false", "-no-color",
                               "-lock=false", "-out=plan"]):
        done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    shown = subprocess.run(["terraform", "show", "-json", "plan"], cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=120, check=True)
    resources = json.loads(shown.stdout)["planned_values"]["root_module"]["child_modules"][0]["resources"]
    alarms = {r["index"]: r["values"] for r in resources if r["type"] == "aws_cloudwatch_metric_alarm"}
    [dashboard] = [r["values"] for r in resources if r["type"] == "aws_cloudwatch_dashboard"]
    return Monitoring(alarms, json.loads(dashboard["dashboard_body"]))


def available() -> bool:
    return shutil.which("terraform") is not None

"""The GitHub workflows: tests on every push; on main, deploy dev then prod with OIDC credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from totes_cdc.settings import SETTINGS_PATH

WORKFLOWS = SETTINGS_PATH.parent.parent / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as true
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def test_ci_runs_make_test_on_every_push() -> None:
    ci = load("ci.yml")
    assert "push" in ci["on"] and ci["on"]["push"] is None  # every branch
    assert any(step.get("run") == "make test" for step in steps(ci["jobs"]["test"]))


def test_deploy_runs_on_main_packages_first_then_dev_then_prod() -> None:
    deploy = load("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert any(step.get("run") == "make package" for step in steps(jobs["package"]))
    assert jobs["dev"]["needs"] == "package" and jobs["prod"]["needs"] == "dev"
    for env in ("dev", "prod"):
        assert jobs[env]["uses"] == "./.github/workflows/deploy-environment.yml"
        assert jobs[env]["with"]["environment"] == env
        assert jobs[env]["permissions"]["id-token"] == "write"


def test_environments_deploy_with_oidc_and_never_stored_keys() -> None:
    text = (WORKFLOWS / "deploy-environment.yml").read_text(encoding="utf-8")
    job = load("deploy-environment.yml")["jobs"]["deploy"]
    assert job["environment"] == "${{ inputs.environment }}"
    credentials = [s for s in steps(job)
                   if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")]
    assert len(credentials) == 1 and "role-to-assume" in credentials[0]["with"]
    assert "aws-access-key-id" not in text and "secrets." not in text
    runs = [s.get("run", "") for s in steps(job)]
    plan = next(i for i, run in enumerate(runs) if run.startswith("terraform plan"))
    apply = next(i for i, run in enumerate(runs) if run == "terraform apply tfplan")
    assert plan < apply
    for workflow in Path(WORKFLOWS).glob("*.yml"):
        assert "AWS_SECRET_ACCESS_KEY" not in workflow.read_text(encoding="utf-8"), workflow.name

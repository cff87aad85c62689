"""The GitHub workflows: CI on branches and pull requests, plans on pull requests; on main, CI
first, then dev and prod, each planned and then applied (prod after approval), with OIDC
credentials and actions pinned by commit SHA."""

from __future__ import annotations

import re
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


def test_ci_runs_make_test_and_a_dependency_audit_on_branches_pull_requests_and_before_deploys() -> None:
    ci = load("ci.yml")
    assert ci["on"]["push"] == {"branches-ignore": ["main"]}
    assert "pull_request" in ci["on"] and "workflow_call" in ci["on"]
    runs = [step.get("run", "") for step in steps(ci["jobs"]["test"])]
    assert "make test" in runs
    assert any("pip-audit" in run for run in runs)


def test_deploy_runs_ci_first_then_dev_then_prod() -> None:
    deploy = load("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["dev"]["needs"] == "ci" and jobs["prod"]["needs"] == "dev"
    for env in ("dev", "prod"):
        assert jobs[env]["uses"] == "./.github/workflows/deploy-environment.yml"
        assert jobs[env]["with"] == {"environment": env, "apply": True}
        assert jobs[env]["permissions"]["id-token"] == "write"


def test_pull_requests_get_a_plan_of_each_environment_and_never_an_apply() -> None:
    plan = load("plan.yml")
    assert list(plan["on"]) == ["pull_request"]
    for env in ("dev", "prod"):
        assert plan["jobs"][env]["with"] == {"environment": env, "apply": False}


def test_the_apply_waits_for_its_plan_and_applies_exactly_that_plan() -> None:
    jobs = load("deploy-environment.yml")["jobs"]
    plan, apply = jobs["plan"], jobs["apply"]
    # The plan runs in <env>-plan (read-only role, no reviewers); the apply in <env>, whose required
    # reviewers (prod) are asked only once the plan job has put the plan in the run summary.
    assert plan["environment"] == "${{ inputs.environment }}-plan"
    assert apply["environment"] == "${{ inputs.environment }}"
    assert apply["needs"] == "plan" and apply["if"] == "inputs.apply"
    plan_runs = [s.get("run", "") for s in steps(plan)]
    assert any("terraform plan -lock=false -out=tfplan" in run and "GITHUB_STEP_SUMMARY" in run
               for run in plan_runs)
    apply_runs = [s.get("run", "") for s in steps(apply)]
    assert apply_runs[-1] == "terraform apply tfplan"
    assert not any("terraform plan" in run or "-target" in run for run in apply_runs)
    for job in (plan, apply):
        init = next(run for run in (s.get("run", "") for s in steps(job)) if run.startswith("terraform init"))
        assert "-lockfile=readonly" in init  # the committed .terraform.lock.hcl


def test_credentials_are_oidc_roles_never_stored_keys() -> None:
    jobs = load("deploy-environment.yml")["jobs"]
    for job in jobs.values():
        credentials = [s for s in steps(job)
                       if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")]
        assert len(credentials) == 1 and "role-to-assume" in credentials[0]["with"]
    for workflow in Path(WORKFLOWS).glob("*.yml"):
        text = workflow.read_text(encoding="utf-8")
        assert "AWS_SECRET_ACCESS_KEY" not in text and "aws-access-key-id" not in text, workflow.name
        assert "secrets." not in text, workflow.name


def test_every_action_is_pinned_by_commit_sha() -> None:
    uses = [line.split("uses:", 1)[1].strip() for workflow in Path(WORKFLOWS).glob("*.yml")
            for line in workflow.read_text(encoding="utf-8").splitlines() if "uses:" in line]
    assert uses
    for use in uses:
        if use.startswith("./"):
            continue  # this repository's own reusable workflows
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40} # v[\d.]+", use), use


def test_every_environment_variable_the_workflow_passes_is_a_root_variable() -> None:
    env = load("deploy-environment.yml")["env"]
    passed = {name.removeprefix("TF_VAR_") for name in env if name.startswith("TF_VAR_")}
    declared = set(re.findall(r'^variable "(\w+)"', (SETTINGS_PATH.parent / "envs" / "shared" /
                                                      "variables.tf").read_text(encoding="utf-8"), re.M))
    assert passed <= declared
    assert {"github_repository", "state_bucket", "source_db_instance_id", "aws_api_cidr"} <= passed

"""The resync one-off task (infra/modules/capture/tasks.tf): the capture container with the
resync command, the capture task's roles and network, no health check; and what capture's role
may write to the lake."""

from __future__ import annotations

from tests.infra.hcl import module, modules


def test_resync_task_is_the_capture_container_with_its_roles_and_another_command() -> None:
    capture = module("capture")
    resync = capture.locals["tasks"]["resync"]
    # Everything of the capture task: roles, cpu, memory, volumes, log group, environment...
    assert resync.startswith("${merge(local.capture_task, {")
    # ...and of its container but the health check (it reads no slot and ends)...
    assert 'for key, value in local.capture_task.container : key => value if key != "healthCheck"' in resync
    # ...with its own family, name and command, and so its own log streams.
    assert 'family = "${local.service}-resync"' in resync
    assert 'name = "resync", command = ["resync"]' in resync
    containers = capture.resources("aws_ecs_task_definition")["this"]["container_definitions"]
    assert "awslogs-stream-prefix = each.value.container.name" in containers


def test_resync_run_task_command_uses_the_capture_services_network() -> None:
    command = module("capture").blocks["output"]["resync_run_task"]["value"]
    service = module("capture").resources("aws_ecs_service")["capture"]["network_configuration"][0]
    assert service["subnets"] == "${var.subnet_ids}"
    assert service["security_groups"] == ["${var.security_group_id}"]
    assert service["assign_public_ip"] is False
    for part in ("aws ecs run-task --cluster", "aws_ecs_cluster.capture.name",
                 'aws_ecs_task_definition.this["resync"].family', "--launch-type FARGATE",
                 'subnets=[${join(",", var.subnet_ids)}]', "securityGroups=[${var.security_group_id}]",
                 "assignPublicIp=DISABLED"):
        assert part in command, part
    for root in ("modules/pipeline", "envs/dev", "envs/prod"):
        assert "resync_run_task" in modules()[root].blocks["output"], root


def test_capture_writes_snapshot_files_only_into_the_lake_zones() -> None:
    [statement] = [s for s in module("capture").data("aws_iam_policy_document")["task"]["statement"]
                   if s.get("sid") == "WriteSnapshotFilesToTheLake"]
    assert statement["actions"] == ["s3:PutObject"]
    assert statement["resources"] == ["${var.raw_bucket_arn}/${var.settings.prefixes.raw}*",
                                      "${var.processed_bucket_arn}/${var.settings.prefixes.processed}*"]
    assert module("pipeline").modules["capture"]["processed_bucket_arn"] == (
        "${module.storage.arns.processed}")

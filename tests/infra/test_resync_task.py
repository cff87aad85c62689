"""The resync one-off task (infra/modules/capture/resync.tf): the capture container with the
resync command, the capture task's roles and network, no health check; and what capture's role
may write to the lake."""

from __future__ import annotations

from tests.infra.hcl import module, modules


def test_resync_task_is_the_capture_container_with_its_roles_and_another_command() -> None:
    capture = module("capture")
    tasks = capture.resources("aws_ecs_task_definition")
    resync, service = tasks["resync"], tasks["capture"]
    for same in ("execution_role_arn", "task_role_arn", "network_mode", "cpu", "memory",
                 "requires_compatibilities", "runtime_platform", "volume"):
        assert resync[same] == service[same], same
    assert capture.locals["capture_container"] == (
        "${jsondecode(aws_ecs_task_definition.capture.container_definitions)[0]}")
    container = capture.locals["resync_container"]
    # Everything of capture's container but the health check (it reads no slot and ends)...
    assert 'for key, value in local.capture_container : key => value if key != "healthCheck"' in container
    # ...with its own name, command and log streams.
    assert 'name = "resync", command = ["resync"]' in container
    assert 'awslogs-stream-prefix = "resync"' in container
    assert resync["container_definitions"] == "${jsonencode([local.resync_container])}"


def test_resync_run_task_command_uses_the_capture_services_network() -> None:
    command = module("capture").blocks["output"]["resync_run_task"]["value"]
    service = module("capture").resources("aws_ecs_service")["capture"]["network_configuration"][0]
    assert service["subnets"] == "${var.subnet_ids}"
    assert service["security_groups"] == ["${var.security_group_id}"]
    assert service["assign_public_ip"] is False
    for part in ("aws ecs run-task --cluster", "aws_ecs_cluster.capture.name",
                 "aws_ecs_task_definition.resync.family", "--launch-type FARGATE",
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

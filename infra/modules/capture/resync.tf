# `totes-cdc resync` in AWS: a one-off ECS task of the capture image, started by hand
# (`terraform output resync_run_task`, docs/operations.md). It is the capture container with the
# resync command, under the capture task's roles, network and state, and without the health check:
# it reads no slot and ends once its tables are in the lake; its progress is in its log lines and
# the SnapshotRowsRemaining metric.

locals {
  resync            = "${local.service}-resync"
  capture_container = jsondecode(aws_ecs_task_definition.capture.container_definitions)[0]
  resync_container = merge({ for key, value in local.capture_container : key => value if key != "healthCheck" }, {
    name    = "resync"
    command = ["resync"]
    logConfiguration = merge(local.capture_container.logConfiguration, {
      options = merge(local.capture_container.logConfiguration.options, { awslogs-stream-prefix = "resync" })
    })
  })
}

resource "aws_ecs_task_definition" "resync" {
  family                   = local.resync
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory_mb
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "state"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([local.resync_container])
}

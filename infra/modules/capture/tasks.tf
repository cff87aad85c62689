# The ECS Fargate task definitions of the capture image, one per command it runs in AWS: the
# capture service (main.tf), the one-off resync and the scheduled source check (source_check.tf).
# All run the image under the execution role, with a read-only root filesystem and their logs in
# CloudWatch; local.tasks holds what differs between them.

locals {
  # libpq reads the connection from PG* variables, injected from the source secret's JSON keys
  # (the RDS secret format), so the password never appears in the task definition.
  secret_keys = {
    PGHOST     = "host"
    PGPORT     = "port"
    PGDATABASE = "dbname"
    PGUSER     = "username"
    PGPASSWORD = "password"
  }

  # Fargate task storage for the state folder and /tmp: the root filesystem stays read-only.
  mount_paths = {
    state = local.state_dir
    tmp   = "/tmp"
  }

  capture_task = {
    family        = local.service
    cpu           = var.cpu
    memory        = var.memory_mb
    task_role_arn = aws_iam_role.task.arn
    volumes       = ["state", "tmp"]
    log_group     = aws_cloudwatch_log_group.capture.name
    # The task's own variables, between the AWS_DEFAULT_REGION and TOTES_CDC_SETTINGS_OVERRIDES
    # that every task has.
    environment = [
      { name = "TOTES_CDC_SOURCE_DSN", value = "application_name=${local.service}" },
      { name = "PGSSLMODE", value = var.source_db_sslmode },
      { name = "TOTES_CDC_STATE_DIR", value = local.state_dir },
      { name = "TOTES_CDC_STATE_STORE", value = "s3" },
    ]
    # The rest of the container definition; the resource adds the parts every task shares.
    container = {
      name    = "capture"
      command = var.command
      # SIGTERM first: capture stops reading, flushes what the stream has accepted, and exits.
      stopTimeout = 60
      secrets = [for env_name, key in local.secret_keys : {
        name      = env_name
        valueFrom = "${var.source_secret_arn}:${key}::"
      }]
      # Healthy while this task's capture process rewrites its status file, in every phase
      # (capture_health.py in the image; settings capture.health_max_age_seconds).
      healthCheck = {
        command     = ["CMD", "python", "/app/capture_health.py"]
        interval    = 30
        timeout     = 10
        retries     = 3
        startPeriod = 120
      }
    }
  }

  tasks = {
    capture = local.capture_task

    # `totes-cdc resync` in AWS: a one-off task, started by hand (`terraform output
    # resync_run_task`, docs/operations.md). It is the capture container with the resync command,
    # under the capture task's roles, network and state, and without the health check: it reads no
    # slot and ends once its tables are in the lake; its progress is in its log lines and the
    # SnapshotRowsRemaining metric.
    resync = merge(local.capture_task, {
      family = "${local.service}-resync"
      container = merge({ for key, value in local.capture_task.container : key => value if key != "healthCheck" }, {
        name    = "resync"
        command = ["resync"]
      })
    })

    source_check = {
      family        = local.check
      cpu           = 512
      memory        = 1024
      task_role_arn = aws_iam_role.source_check.arn
      volumes       = ["tmp"]
      log_group     = aws_cloudwatch_log_group.source_check.name
      environment   = [{ name = "PGSSLROOTCERT", value = "/app/rds-ca.pem" }]
      container = {
        name    = "source-check"
        command = ["source-check", "--source-secret", var.source_secret_arn, "--warehouse-secret", var.warehouse_secret_arn]
      }
    }
  }
}

resource "aws_ecs_task_definition" "this" {
  for_each = local.tasks

  family                   = each.value.family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = each.value.task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  dynamic "volume" {
    for_each = each.value.volumes
    content {
      name = volume.value
    }
  }

  container_definitions = jsonencode([merge(each.value.container, {
    image                  = "${aws_ecr_repository.capture.repository_url}:${var.image_tag}"
    essential              = true
    readonlyRootFilesystem = true
    environment = concat(
      [{ name = "AWS_DEFAULT_REGION", value = data.aws_region.current.name }],
      each.value.environment,
      [{ name = "TOTES_CDC_SETTINGS_OVERRIDES", value = var.settings_overrides }],
    )
    mountPoints = [for volume in each.value.volumes : {
      sourceVolume  = volume
      containerPath = local.mount_paths[volume]
    }]
    logConfiguration = {
      logDriver = "awslogs"
      # Each task's log streams are named after its container.
      options = {
        awslogs-group         = each.value.log_group
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = each.value.container.name
      }
    }
  })])
}

# The three task definitions were once resources of their own.
moved {
  from = aws_ecs_task_definition.capture
  to   = aws_ecs_task_definition.this["capture"]
}

moved {
  from = aws_ecs_task_definition.resync
  to   = aws_ecs_task_definition.this["resync"]
}

moved {
  from = aws_ecs_task_definition.source_check
  to   = aws_ecs_task_definition.this["source_check"]
}

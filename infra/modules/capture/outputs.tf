output "repository_url" {
  description = "ECR repository the deploy workflow pushes the capture image to."
  value       = aws_ecr_repository.capture.repository_url
}

output "cluster_name" {
  description = "ECS cluster of the capture service."
  value       = aws_ecs_cluster.capture.name
}

output "service_name" {
  description = "ECS service of the capture task."
  value       = aws_ecs_service.capture.name
}

output "resync_run_task" {
  description = "The `aws ecs run-task` command of a resync of every captured table; name tables with --overrides (docs/operations.md)."
  value = join(" ", [
    "aws ecs run-task --cluster", aws_ecs_cluster.capture.name,
    "--task-definition", aws_ecs_task_definition.this["resync"].family, "--launch-type FARGATE",
    "--network-configuration", "'awsvpcConfiguration={subnets=[${join(",", var.subnet_ids)}],securityGroups=[${var.security_group_id}],assignPublicIp=DISABLED}'",
  ])
}

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

output "capture_repository_url" {
  description = "Where the deploy workflow pushes the capture image."
  value       = module.capture.repository_url
}

output "capture_cluster" {
  description = "ECS cluster of the capture service."
  value       = module.capture.cluster_name
}

output "capture_service" {
  description = "ECS service of the capture task."
  value       = module.capture.service_name
}

output "resync_run_task" {
  description = "The `aws ecs run-task` command of a resync (docs/operations.md)."
  value       = module.capture.resync_run_task
}

output "buckets" {
  description = "Bucket names by role."
  value       = module.storage.names
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies."
  value       = module.monitoring.alarm_topic_arn
}

output "dashboard" {
  description = "CloudWatch dashboard name."
  value       = module.monitoring.dashboard_name
}

output "github_role_arns" {
  description = "Roles of the GitHub workflows: deploy (environment <env>) and plan (pull requests, <env>-plan)."
  value       = module.delivery.role_arns
}

output "stream_processor_stream_consumer_arn" {
  description = "The stream processor's enhanced fan-out consumer (null: its mapping polls the stream)."
  value       = module.stream_processor.stream_consumer_arn
}

output "stream_processor_event_source_arn" {
  description = "What the stream processor's event source mapping reads: the stream or its consumer."
  value       = module.stream_processor.event_source_arn
}

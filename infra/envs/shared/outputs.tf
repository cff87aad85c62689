output "capture_repository_url" {
  description = "Where the deploy workflow pushes the capture image."
  value       = module.pipeline.capture_repository_url
}

output "capture_cluster" {
  description = "ECS cluster of the capture service."
  value       = module.pipeline.capture_cluster
}

output "capture_service" {
  description = "ECS service of the capture task."
  value       = module.pipeline.capture_service
}

output "resync_run_task" {
  description = "The `aws ecs run-task` command of a resync (docs/operations.md)."
  value       = module.pipeline.resync_run_task
}

output "buckets" {
  description = "Bucket names by role."
  value       = module.pipeline.buckets
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies."
  value       = module.pipeline.alarm_topic_arn
}

output "dashboard" {
  description = "CloudWatch dashboard name."
  value       = module.pipeline.dashboard
}

output "github_role_arns" {
  description = "AWS_ROLE_ARN of the GitHub environments: deploy (<env>) and plan (<env>-plan)."
  value       = module.pipeline.github_role_arns
}

output "stream_processor_stream_consumer_arn" {
  description = "The stream processor's enhanced fan-out consumer (null: its mapping polls the stream)."
  value       = module.pipeline.stream_processor_stream_consumer_arn
}

output "stream_processor_event_source_arn" {
  description = "What the stream processor's event source mapping reads: the stream or its consumer."
  value       = module.pipeline.stream_processor_event_source_arn
}

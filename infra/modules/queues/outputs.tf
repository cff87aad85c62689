output "processed_files_arn" {
  description = "ARN of the queue of new processed files."
  value       = aws_sqs_queue.processed_files.arn
}

output "snapshot_files" {
  description = "ARN and URL of the queue of snapshot files."
  value       = { arn = aws_sqs_queue.snapshot_files.arn, url = aws_sqs_queue.snapshot_files.url }
}

output "stream_failures_arn" {
  description = "ARN of the Kinesis mapping's on-failure destination queue."
  value       = aws_sqs_queue.stream_failures.arn
}

output "names" {
  description = "Queue names by role."
  value = {
    processed_files     = aws_sqs_queue.processed_files.name
    processed_files_dlq = aws_sqs_queue.processed_files_dlq.name
    snapshot_files      = aws_sqs_queue.snapshot_files.name
    stream_failures     = aws_sqs_queue.stream_failures.name
  }
}

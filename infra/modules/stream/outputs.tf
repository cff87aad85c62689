output "arn" {
  description = "ARN of the change stream."
  value       = aws_kinesis_stream.changes.arn
}

output "name" {
  description = "Name of the change stream."
  value       = aws_kinesis_stream.changes.name
}

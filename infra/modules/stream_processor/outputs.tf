output "function_name" {
  description = "Name of the stream-processor function."
  value       = module.function.name
}

output "timeout_seconds" {
  description = "Timeout of the stream-processor function."
  value       = module.function.timeout_seconds
}

output "event_source_arn" {
  description = "What the event source mapping reads: the stream, or its enhanced fan-out consumer."
  value       = aws_lambda_event_source_mapping.stream.event_source_arn
}

output "stream_consumer_arn" {
  description = "The enhanced fan-out consumer of the stream processor (null: it polls the stream)."
  value       = one(aws_kinesis_stream_consumer.processor[*].arn)
}

output "function_name" {
  description = "Name of the stream-processor function."
  value       = module.function.name
}

output "timeout_seconds" {
  description = "Timeout of the stream-processor function."
  value       = module.function.timeout_seconds
}

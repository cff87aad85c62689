output "function_name" {
  description = "Name of the loader function."
  value       = module.function.name
}

output "timeout_seconds" {
  description = "Timeout of the loader function."
  value       = module.function.timeout_seconds
}

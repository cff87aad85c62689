output "arn" {
  description = "ARN of the function."
  value       = aws_lambda_function.this.arn
}

output "name" {
  description = "Name of the function."
  value       = aws_lambda_function.this.function_name
}

output "timeout_seconds" {
  description = "Timeout of the function."
  value       = aws_lambda_function.this.timeout
}

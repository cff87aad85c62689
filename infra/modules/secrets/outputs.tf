output "arns" {
  description = "Secret ARNs by role (source, warehouse)."
  value       = { for role, secret in aws_secretsmanager_secret.this : role => secret.arn }
}

output "role_arns" {
  description = "Role ARNs for the GitHub environments' AWS_ROLE_ARN: deploy (<env>) and plan (<env>-plan)."
  value       = { for role, r in aws_iam_role.github : role => r.arn }
}

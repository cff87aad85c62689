output "role_arns" {
  description = "Role ARNs for the GitHub environments' AWS_ROLE_ARN: deploy (<env>) and plan (<env>-plan)."
  value       = { for role, r in aws_iam_role.github : role => r.arn }
}

output "boundary_arn" {
  description = "The permissions boundary every role of the pipeline but the GitHub roles carries."
  value       = aws_iam_policy.boundary.arn
}

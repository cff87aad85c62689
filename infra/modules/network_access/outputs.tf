output "capture_security_group_id" {
  description = "Security group of the capture task."
  value       = aws_security_group.client["capture"].id
}

output "loader_security_group_id" {
  description = "Security group of the loader Lambda."
  value       = aws_security_group.client["loader"].id
}

output "source_check_security_group_id" {
  description = "Security group of the scheduled source check."
  value       = aws_security_group.client["source_check"].id
}

output "names" {
  description = "Bucket names by role (raw, processed, dead_letter, artifacts, access_logs)."
  value       = { for role, bucket in aws_s3_bucket.this : role => bucket.id }
}

output "arns" {
  description = "Bucket ARNs by role."
  value       = { for role, bucket in aws_s3_bucket.this : role => bucket.arn }
}

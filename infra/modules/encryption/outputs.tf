output "key_arn" {
  description = "ARN of the pipeline's KMS key."
  value       = aws_kms_key.pipeline.arn
}

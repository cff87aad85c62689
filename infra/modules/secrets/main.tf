# Database credentials. Terraform creates the secrets empty, so no credential ever sits in
# Terraform state; their values are put out of band (docs/deploy.md), as JSON {"dsn": "..."}.

resource "aws_secretsmanager_secret" "this" {
  for_each = var.settings.secrets
  #checkov:skip=CKV2_AWS_57:The database owners rotate these credentials and put the new DSN with put-secret-value; no rotation Lambda is deployed.
  name                    = each.value
  description             = "libpq DSN of the ${each.key} database, as JSON {\"dsn\": \"...\"}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

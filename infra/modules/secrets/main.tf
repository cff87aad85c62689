# Database credentials. Terraform creates the secrets empty, so no credential ever sits in
# Terraform state; their values are put out of band (docs/deploy.md) in the RDS secret layout the
# consumers read: JSON {"host", "port", "dbname", "username", "password"} (optional "sslmode").

resource "aws_secretsmanager_secret" "this" {
  for_each = var.settings.secrets
  #checkov:skip=CKV2_AWS_57:The database owners rotate these credentials and put the new values with put-secret-value; no rotation Lambda is deployed.
  name                    = each.value
  description             = "Connection of the ${each.key} database, RDS layout: JSON {host, port, dbname, username, password[, sslmode]}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

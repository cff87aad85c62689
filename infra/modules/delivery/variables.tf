variable "settings" {
  description = "The parsed infra/settings.json."
  type        = any
}

variable "environment" {
  description = "Environment name (dev, prod): the GitHub environment the deploy role trusts."
  type        = string
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflows may assume the roles."
  type        = string
}

variable "state_bucket" {
  description = "S3 bucket holding the environment's Terraform state."
  type        = string
}

variable "artifacts_bucket" {
  description = "Bucket of the Lambda zips (the plan role reads them, the lake's objects not)."
  type        = string
}

variable "database_security_group_ids" {
  description = "Security groups of the source and warehouse databases: the deploy role adds the pipeline's ingress rules to them."
  type        = list(string)
}

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

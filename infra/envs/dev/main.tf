# The dev environment: its own AWS account, state in S3 with S3-native locking.
# terraform init -backend-config="bucket=<state bucket>" (docs/deploy.md).

terraform {
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  backend "s3" {
    key          = "totes-cdc/dev.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}

locals {
  settings = jsondecode(file("${path.module}/../../settings.json"))
}

provider "aws" {
  region = local.settings.region
  default_tags {
    tags = {
      project     = local.settings.deploy.name
      environment = "dev"
    }
  }
}

module "pipeline" {
  source = "../../modules/pipeline"

  environment                    = "dev"
  vpc_id                         = var.vpc_id
  private_subnet_ids             = var.private_subnet_ids
  source_db_security_group_id    = var.source_db_security_group_id
  source_db_instance_id          = var.source_db_instance_id
  aws_api_cidr                   = var.aws_api_cidr
  artifacts_root                 = var.artifacts_root
  github_repository              = var.github_repository
  state_bucket                   = var.state_bucket
  warehouse_db_security_group_id = var.warehouse_db_security_group_id
  alarm_emails                   = var.alarm_emails
  capture_image_tag              = var.capture_image_tag
  stream_on_demand               = false
  stream_enhanced_fan_out        = var.stream_enhanced_fan_out
  loader_concurrency             = 2
}

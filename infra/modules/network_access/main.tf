# What talks to RDS runs in the VPC: the capture task (source database), the loader Lambda
# (warehouse) and the scheduled source check (both). Each gets its own security group, allowed into
# each database's security group it needs only on the database port, and out on HTTPS to the AWS
# APIs: through NAT or VPC interface endpoints (aws_api_cidr), and to S3's prefix list, where a
# gateway endpoint sends S3 traffic whatever the CIDR.

data "aws_region" "current" {}

data "aws_ec2_managed_prefix_list" "s3" {
  name = "com.amazonaws.${data.aws_region.current.name}.s3"
}

locals {
  databases = {
    source    = { group = var.source_db_security_group_id, port = var.source_db_port, description = "source database (totesys)" }
    warehouse = { group = var.warehouse_db_security_group_id, port = var.warehouse_db_port, description = "warehouse database" }
  }
  clients = {
    capture      = { description = "capture task: reads the source database's replication slot", databases = ["source"] }
    loader       = { description = "warehouse loader Lambda: writes the warehouse", databases = ["warehouse"] }
    source_check = { description = "scheduled source check: slot lag and reconcile", databases = ["source", "warehouse"] }
  }
  # One entry per client and database it reaches.
  links = merge([for client, c in local.clients : {
    for db in c.databases : "${client}-${db}" => merge(local.databases[db], { client = client })
  }]...)
}

resource "aws_security_group" "client" {
  #checkov:skip=CKV2_AWS_5:Attached in other modules: the capture service's and the source check's network configuration and the loader Lambda's vpc_config.
  for_each    = local.clients
  name        = "${var.name}-${replace(each.key, "_", "-")}"
  description = each.value.description
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "to_database" {
  for_each                     = local.links
  security_group_id            = aws_security_group.client[each.value.client].id
  description                  = "to the ${each.value.description}"
  referenced_security_group_id = each.value.group
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_vpc_security_group_ingress_rule" "database_from_client" {
  for_each                     = local.links
  security_group_id            = each.value.group
  description                  = "from the ${var.name} ${replace(each.value.client, "_", " ")}"
  referenced_security_group_id = aws_security_group.client[each.value.client].id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "to_aws_apis" {
  for_each          = local.clients
  security_group_id = aws_security_group.client[each.key].id
  description       = "HTTPS to the AWS APIs (NAT gateway or VPC interface endpoints)"
  cidr_ipv4         = var.aws_api_cidr
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "to_s3_gateway" {
  for_each          = local.clients
  security_group_id = aws_security_group.client[each.key].id
  description       = "HTTPS to S3 through a gateway endpoint (S3's prefix list)"
  prefix_list_id    = data.aws_ec2_managed_prefix_list.s3.id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# The rules of the two clients that existed before the source check keep their resources.
moved {
  from = aws_vpc_security_group_egress_rule.to_database["capture"]
  to   = aws_vpc_security_group_egress_rule.to_database["capture-source"]
}

moved {
  from = aws_vpc_security_group_egress_rule.to_database["loader"]
  to   = aws_vpc_security_group_egress_rule.to_database["loader-warehouse"]
}

moved {
  from = aws_vpc_security_group_ingress_rule.database_from_client["capture"]
  to   = aws_vpc_security_group_ingress_rule.database_from_client["capture-source"]
}

moved {
  from = aws_vpc_security_group_ingress_rule.database_from_client["loader"]
  to   = aws_vpc_security_group_ingress_rule.database_from_client["loader-warehouse"]
}

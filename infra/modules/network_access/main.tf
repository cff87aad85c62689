# What talks to RDS runs in the VPC: the capture task (source database) and the loader Lambda
# (warehouse). Each gets its own security group, allowed into its database's security group only
# on the database port, and out on HTTPS to the AWS APIs (through NAT or VPC interface endpoints).

locals {
  clients = {
    capture = {
      description    = "capture task: reads the source database's replication slot"
      db_group       = var.source_db_security_group_id
      db_port        = var.source_db_port
      db_description = "source database (totesys)"
    }
    loader = {
      description    = "warehouse loader Lambda: writes the warehouse"
      db_group       = var.warehouse_db_security_group_id
      db_port        = var.warehouse_db_port
      db_description = "warehouse database"
    }
  }
}

resource "aws_security_group" "client" {
  #checkov:skip=CKV2_AWS_5:Attached in other modules: the capture service's network configuration and the loader Lambda's vpc_config.
  for_each    = local.clients
  name        = "${var.name}-${each.key}"
  description = each.value.description
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "to_database" {
  for_each                     = local.clients
  security_group_id            = aws_security_group.client[each.key].id
  description                  = "to the ${each.value.db_description}"
  referenced_security_group_id = each.value.db_group
  ip_protocol                  = "tcp"
  from_port                    = each.value.db_port
  to_port                      = each.value.db_port
}

resource "aws_vpc_security_group_ingress_rule" "database_from_client" {
  for_each                     = local.clients
  security_group_id            = each.value.db_group
  description                  = "from the ${var.name} ${each.key}"
  referenced_security_group_id = aws_security_group.client[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = each.value.db_port
  to_port                      = each.value.db_port
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

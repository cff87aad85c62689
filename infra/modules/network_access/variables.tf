variable "name" {
  description = "Name prefix of the deployment."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the RDS databases."
  type        = string
}

variable "source_db_security_group_id" {
  description = "Security group of the source (totesys) RDS instance."
  type        = string
}

variable "source_db_port" {
  description = "Port of the source database."
  type        = number
}

variable "warehouse_db_security_group_id" {
  description = "Security group of the warehouse RDS instance."
  type        = string
}

variable "warehouse_db_port" {
  description = "Port of the warehouse database."
  type        = number
}

variable "aws_api_cidr" {
  description = "Where HTTPS to the AWS APIs goes: 0.0.0.0/0 through a NAT gateway, or the VPC CIDR when interface endpoints serve every API."
  type        = string
}

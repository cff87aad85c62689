variable "name" {
  description = "Name prefix of the deployment (settings deploy.name and the environment)."
  type        = string
}

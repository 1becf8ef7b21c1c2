# AWS provider: the deployment region and the tags every resource carries.
provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

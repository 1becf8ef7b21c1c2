# Terraform and AWS provider version constraints (constraints only: the provider is configured in providers.tf).
# Terraform >= 1.10 for the S3 backend's native lock file (backend.tf.example: use_lockfile = true).
terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.25, < 7.0"
    }
  }
}

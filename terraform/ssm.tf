# The one SSM parameter the DAGs read on aws (kt.config): every deployed name, and the endpoint
# settings dkt_train's promotions must keep (name prefix, KMS key, capture sampling, instance count),
# as JSON whose keys are exactly the field names of kt.config.Settings (unknown keys are rejected).

resource "aws_ssm_parameter" "this" {
  #checkov:skip=CKV2_AWS_34:Holds only resource names and ARNs, no secret; kt.config reads it with GetParameter without WithDecryption, so it must stay a String.
  name        = var.ssm_parameter_name
  description = "Deployed names of ${var.project} for the kt DAGs (kt.config.Settings fields)."
  type        = "String"
  value       = jsonencode(local.ssm_config)
}

# Outputs: the deployed names the DAGs, the tutor and operators need (the same values are in the
# SSM parameter, which is what the DAGs read).

output "s3_lake_bucket_name" {
  description = "Name of the S3 lake bucket."
  value       = aws_s3_bucket.lake.id
}

output "s3_lake_uri" {
  description = "Lake root for KT_LAKE (s3://bucket)."
  value       = local.lake_uri
}

output "s3_log_bucket_name" {
  description = "Name of the S3 access-log bucket."
  value       = aws_s3_bucket.logs.id
}

output "kms_key_arn" {
  description = "ARN of the customer managed key used by the lake, tables, SageMaker, Glue, logs and SNS."
  value       = aws_kms_key.this.arn
}

output "dynamodb_history_table_name" {
  description = "DynamoDB table of tutor answers."
  value       = aws_dynamodb_table.history.name
}

output "dynamodb_mastery_table_name" {
  description = "DynamoDB table of mastery rows."
  value       = aws_dynamodb_table.mastery.name
}

output "glue_job_name" {
  description = "Name of the Glue ETL job."
  value       = aws_glue_job.this.name
}

output "glue_role_name" {
  description = "Name of the Glue job's IAM role."
  value       = aws_iam_role.glue.name
}

output "glue_script_location" {
  description = "S3 URI of the Glue script."
  value       = local.glue_script_uri
}

output "glue_extra_py_files" {
  description = "S3 URI of the kt library zip passed to the Glue job as --extra-py-files."
  value       = local.glue_library_uri
}

output "sagemaker_role_arn" {
  description = "SageMaker execution role for training jobs, transform jobs and models."
  value       = aws_iam_role.sagemaker.arn
}

output "sagemaker_training_image_uri" {
  description = "Training image for training_instance_type (GPU image on GPU types)."
  value       = local.training_image_uri
}

output "sagemaker_training_cpu_image_uri" {
  description = "CPU training image."
  value       = local.training_cpu_image_uri
}

output "sagemaker_training_gpu_image_uri" {
  description = "GPU training image (ml.g4dn and other GPU types)."
  value       = local.training_gpu_image_uri
}

output "sagemaker_inference_image_uri" {
  description = "Inference image of the endpoint and batch transform."
  value       = local.inference_image_uri
}

output "sagemaker_code_uri" {
  description = "S3 URI of sourcedir.tar.gz (sagemaker_submit_directory)."
  value       = local.sagemaker_code_uri
}

output "sagemaker_training_output_uri" {
  description = "S3 prefix of training job outputs (models/dkt/<job>/output/model.tar.gz)."
  value       = local.training_output_uri
}

output "sagemaker_transform_uri" {
  description = "S3 prefix of batch transform inputs and outputs (inference/batch/<run-date>/...)."
  value       = local.transform_uri
}

output "sagemaker_data_capture_uri" {
  description = "S3 prefix of endpoint data capture (realtime mode)."
  value       = local.data_capture_uri
}

output "sagemaker_endpoint_name" {
  description = "Endpoint name used by the DAGs and the API."
  value       = var.endpoint_name
}

output "sagemaker_variant_name" {
  description = "Production variant name; endpoint configs created by dkt_train must use it (alarms and autoscaling refer to it)."
  value       = local.variant_name
}

output "sagemaker_name_prefix" {
  description = "Prefix every SageMaker job, model and endpoint config name created by the DAGs must start with."
  value       = var.sagemaker_name_prefix
}

output "airflow_role_arn" {
  description = "IAM role of self-hosted Airflow workers (EC2 instance role or assumed by a trusted role); not for MWAA."
  value       = aws_iam_role.airflow.arn
}

output "airflow_instance_profile_name" {
  description = "Instance profile for self-hosted Airflow on EC2."
  value       = aws_iam_instance_profile.airflow.name
}

output "ssm_parameter_name" {
  description = "SSM parameter holding the deployed names as JSON (KT_SSM_PARAMETER)."
  value       = aws_ssm_parameter.this.name
}

output "sns_alarm_topic_arn" {
  description = "SNS topic of alarms and Glue failures."
  value       = aws_sns_topic.alarms.arn
}

output "api_gateway_invoke_url" {
  description = "Base URL of the API; routes are <url>/api/kt/mastery and <url>/api/kt/answers."
  value       = aws_api_gateway_stage.this.invoke_url
}

output "api_gateway_api_key_id" {
  description = "ID of the tutor's API key (read the value with `terraform output -raw api_gateway_api_key_value`)."
  value       = aws_api_gateway_api_key.this.id
}

output "api_gateway_api_key_value" {
  description = "The tutor's API key (x-api-key header)."
  value       = aws_api_gateway_api_key.this.value
  sensitive   = true
}

output "cloudwatch_dashboard_name" {
  description = "Name of the CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

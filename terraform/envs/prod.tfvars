# Production: serverless endpoint sized for the tutor, full Glue job, protected tables.
# terraform plan -var-file=envs/prod.tfvars -var model_data_url=s3://.../model.tar.gz
environment                  = "prod"
region                       = "us-east-1"
force_destroy_buckets        = false
dynamodb_deletion_protection = true
glue_number_of_workers       = 10
endpoint_mode                = "serverless"
serverless_memory_mb         = 3072
serverless_max_concurrency   = 20
sagemaker_enabled            = true
training_instance_type       = "ml.g4dn.xlarge"
api_throttle_rate_limit      = 100
api_throttle_burst_limit     = 200
api_quota_limit              = 2000000
alarm_email                  = "kt-oncall@example.com"

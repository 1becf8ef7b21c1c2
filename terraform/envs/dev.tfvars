# Development: serverless endpoint, small Glue job, deletable tables and buckets.
# terraform plan -var-file=envs/dev.tfvars
environment                  = "dev"
region                       = "us-east-1"
force_destroy_buckets        = true
dynamodb_deletion_protection = false
glue_number_of_workers       = 2
endpoint_mode                = "serverless"
serverless_memory_mb         = 2048
serverless_max_concurrency   = 5
sagemaker_enabled            = false
training_instance_type       = "ml.m5.xlarge"
api_throttle_rate_limit      = 10
api_throttle_burst_limit     = 20
api_quota_limit              = 10000
alarm_email                  = ""

# Input variables: names the DAGs and the API rely on, sizes, switches and alarm thresholds.
# Every variable has description, type and default, in that order; the defaults are the names in
# docs/contracts.md and src/kt/config.py, so a plain `terraform apply` matches what the code expects.

# Project

variable "project" {
  description = "Project name: prefix of bucket, role, key and API names."
  type        = string
  default     = "pythagoras-kt"
}

variable "environment" {
  description = "Deployment environment, used in tags and the API stage description."
  type        = string
  default     = "dev"

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "region" {
  description = "AWS region of every resource."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Extra tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups this module creates (checkov asks for at least a year)."
  type        = number
  default     = 365
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the customer managed KMS key is deleted."
  type        = number
  default     = 30
}

# Lake

variable "lake_bucket_name" {
  description = "Name of the S3 lake bucket; empty means <project>-lake-<account id>-<region>."
  type        = string
  default     = ""
}

variable "force_destroy_buckets" {
  description = "Controls if `terraform destroy` may delete non-empty lake and log buckets (dev only)."
  type        = bool
  default     = false
}

# DynamoDB

variable "history_table_name" {
  description = "DynamoDB table of tutor answers (docs/contracts.md section 7.1)."
  type        = string
  default     = "kt-history"
}

variable "mastery_table_name" {
  description = "DynamoDB table of nightly mastery rows (docs/contracts.md section 7.2)."
  type        = string
  default     = "kt-mastery"
}

variable "dynamodb_deletion_protection" {
  description = "Controls if the DynamoDB tables have deletion protection."
  type        = bool
  default     = true
}

# Glue

variable "glue_job_name" {
  description = "Name of the Glue ETL job run by the ednet_etl DAG."
  type        = string
  default     = "ednet-preprocessor"
}

variable "glue_version" {
  description = "Glue version of the ETL job (5.1 = Spark 3.5.6, Python 3.11: the versions tests/test_glue_job.py runs)."
  type        = string
  default     = "5.1"
}

variable "glue_worker_type" {
  description = "Glue worker type of the ETL job."
  type        = string
  default     = "G.1X"

  validation {
    condition     = contains(["G.1X", "G.2X", "G.4X", "G.8X"], var.glue_worker_type)
    error_message = "glue_worker_type must be one of G.1X, G.2X, G.4X, G.8X."
  }
}

variable "glue_number_of_workers" {
  description = "Number of Glue workers of the ETL job."
  type        = number
  default     = 10
}

variable "glue_timeout_minutes" {
  description = "Timeout of one ETL job run, in minutes."
  type        = number
  default     = 120
}

variable "glue_input_format" {
  description = "Raw data format passed to the Glue job as --format."
  type        = string
  default     = "riiid"

  validation {
    condition     = contains(["riiid", "kt1"], var.glue_input_format)
    error_message = "glue_input_format must be riiid or kt1 (kt.etl.FORMATS)."
  }
}

# SageMaker

variable "sagemaker_enabled" {
  description = "Controls if the tutor uses DKT (true) or the Bayesian estimate (false, Phase 1); written to the SSM config."
  type        = bool
  default     = false
}

variable "sagemaker_name_prefix" {
  description = "Prefix of every SageMaker training job, model, endpoint config and transform job name the DAGs create (written to the SSM config); Airflow's IAM policy is scoped to it."
  type        = string
  default     = "pythagoras-dkt"

  validation {
    # kt.config.SAGEMAKER_NAME_PREFIX_PATTERN: 1-33 characters, so "<prefix>-tf-" plus the 26-character
    # suffix of name_prefix stays within SageMaker's 63.
    condition     = can(regex("^[a-zA-Z0-9]([a-zA-Z0-9-]{0,31}[a-zA-Z0-9])?$", var.sagemaker_name_prefix))
    error_message = "sagemaker_name_prefix must be 1 to 33 letters, digits and inner hyphens."
  }
}

variable "endpoint_name" {
  description = "SageMaker endpoint name used by the DAGs and the API."
  type        = string
  default     = "pythagoras-dkt-endpoint"
}

variable "endpoint_mode" {
  description = "How the endpoint is hosted: serverless (pay per request) or realtime (always-on instances with autoscaling)."
  type        = string
  default     = "serverless"

  validation {
    condition     = contains(["serverless", "realtime"], var.endpoint_mode)
    error_message = "endpoint_mode must be serverless or realtime."
  }
}

variable "model_data_url" {
  description = "S3 URI of the model.tar.gz Terraform deploys first; empty means Terraform creates no model/endpoint and dkt_train creates the endpoint on its first promotion."
  type        = string
  default     = ""
}

variable "serverless_memory_mb" {
  description = "Memory of the serverless endpoint, in MB."
  type        = number
  default     = 3072

  validation {
    condition     = contains([1024, 2048, 3072, 4096, 5120, 6144], var.serverless_memory_mb)
    error_message = "serverless_memory_mb must be 1024..6144 in steps of 1024."
  }
}

variable "serverless_max_concurrency" {
  description = "Maximum concurrent invocations of the serverless endpoint."
  type        = number
  default     = 20

  validation {
    condition     = var.serverless_max_concurrency >= 1 && var.serverless_max_concurrency <= 200
    error_message = "serverless_max_concurrency must be between 1 and 200."
  }
}

variable "endpoint_instance_type" {
  description = "Instance type of the realtime endpoint."
  type        = string
  default     = "ml.g4dn.xlarge"
}

variable "endpoint_min_instances" {
  description = "Minimum (and initial) instance count of the realtime endpoint, also in the endpoint configs dkt_train creates."
  type        = number
  default     = 1

  validation {
    condition     = var.endpoint_min_instances >= 1 && floor(var.endpoint_min_instances) == var.endpoint_min_instances
    error_message = "endpoint_min_instances must be a whole number of at least 1."
  }
}

variable "endpoint_max_instances" {
  description = "Maximum instance count of the realtime endpoint under autoscaling."
  type        = number
  default     = 2
}

variable "endpoint_invocations_per_instance_target" {
  description = "Target of SageMakerVariantInvocationsPerInstance (invocations per instance per minute) for realtime autoscaling."
  type        = number
  default     = 300
}

variable "data_capture_sampling_percentage" {
  description = "Share of realtime endpoint requests captured to monitoring/data-capture/, read by kt_drift_check (serverless endpoints do not support data capture)."
  type        = number
  default     = 20

  validation {
    condition     = var.data_capture_sampling_percentage >= 0 && var.data_capture_sampling_percentage <= 100 && floor(var.data_capture_sampling_percentage) == var.data_capture_sampling_percentage
    error_message = "data_capture_sampling_percentage must be a whole number from 0 to 100."
  }
}

variable "keep_versions" {
  description = "Versions of raw/ednet and processed/ednet kept by ingestion and the ETL: the served one and those served before it (KT_KEEP_VERSIONS)."
  type        = number
  default     = 3

  validation {
    condition     = var.keep_versions >= 1 && floor(var.keep_versions) == var.keep_versions
    error_message = "keep_versions must be a whole number of at least 1."
  }
}

variable "training_instance_type" {
  description = "Instance type of SageMaker training jobs (a GPU type selects the GPU training image)."
  type        = string
  default     = "ml.g4dn.xlarge"
}

variable "transform_instance_type" {
  description = "Instance type of the nightly batch transform job."
  type        = string
  default     = "ml.m5.large"
}

variable "training_image_uri" {
  description = "CPU training image; empty means the AWS DLC pytorch-training:2.6.0-cpu-py312 in the region."
  type        = string
  default     = ""
}

variable "training_gpu_image_uri" {
  description = "GPU training image used when training_instance_type is a GPU type; empty means the AWS DLC pytorch-training:2.6.0-gpu-py312 in the region."
  type        = string
  default     = ""
}

variable "inference_image_uri" {
  description = "Inference image of the endpoint and batch transform; empty means the AWS DLC pytorch-inference:2.6.0-cpu-py312 in the region."
  type        = string
  default     = ""
}

variable "dlc_account_id" {
  description = "Account that publishes the AWS Deep Learning Containers in the region (763104351884 in most commercial regions)."
  type        = string
  default     = "763104351884"
}

# API Gateway

variable "api_stage_name" {
  description = "API Gateway stage name (first path segment of the invoke URL)."
  type        = string
  default     = "v1"
}

variable "api_throttle_rate_limit" {
  description = "Steady-state requests per second allowed per API key (usage plan)."
  type        = number
  default     = 50
}

variable "api_throttle_burst_limit" {
  description = "Burst of requests allowed per API key (usage plan)."
  type        = number
  default     = 100
}

variable "api_quota_limit" {
  description = "Requests allowed per API key per day (usage plan)."
  type        = number
  default     = 500000
}

variable "waf_rate_limit" {
  description = "Requests per 5 minutes from one IP address before the WAF blocks it."
  type        = number
  default     = 2000
}

variable "create_api_gateway_account" {
  description = "Controls if this module sets the region-wide API Gateway CloudWatch role (needed once per account and region for API logs)."
  type        = bool
  default     = true
}

# Monitoring

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic; empty means no subscription."
  type        = string
  default     = ""
}

variable "drift_threshold" {
  description = "Alarm threshold of the KT/DriftScore metric (PSI) published by kt_drift_check."
  type        = number
  default     = 0.2
}

# Airflow

variable "airflow_trusted_role_arns" {
  description = "Extra IAM principals (for example a self-hosted Airflow's existing role) allowed to assume the Airflow role."
  type        = list(string)
  default     = []
}

variable "ssm_parameter_name" {
  description = "Name of the SSM parameter holding the deployed names as JSON (kt.config reads it)."
  type        = string
  default     = "/pythagoras-kt/config"
}

# Account facts and every derived name: bucket, lake prefixes and URIs, images, role names,
# SageMaker ARN prefixes, the SSM config document, and the list of IAM `*` resource exceptions.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(
    {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    },
    var.tags,
  )

  # Lake (docs/contracts.md section 3)
  lake_bucket_name = coalesce(var.lake_bucket_name, "${var.project}-lake-${local.account_id}-${var.region}")
  log_bucket_name  = "${local.lake_bucket_name}-logs"
  lake_uri         = "s3://${local.lake_bucket_name}"

  glue_script_key     = "artifacts/glue/ednet_preprocessor.py"
  glue_library_key    = "artifacts/glue/kt_glue.zip"
  skill_mappings_key  = "artifacts/skill_mappings.json"
  sagemaker_code_key  = "artifacts/sagemaker/sourcedir.tar.gz"
  glue_script_uri     = "${local.lake_uri}/${local.glue_script_key}"
  glue_library_uri    = "${local.lake_uri}/${local.glue_library_key}"
  skill_mappings_uri  = "${local.lake_uri}/${local.skill_mappings_key}"
  sagemaker_code_uri  = "${local.lake_uri}/${local.sagemaker_code_key}"
  glue_temp_dir       = "${local.lake_uri}/artifacts/glue/tmp/"
  raw_uri             = "${local.lake_uri}/raw/ednet/"
  processed_uri       = "${local.lake_uri}/processed/ednet/"
  training_output_uri = "${local.lake_uri}/models/dkt/"
  transform_uri       = "${local.lake_uri}/inference/batch/"
  data_capture_uri    = "${local.lake_uri}/monitoring/data-capture/"

  # Names
  glue_role_name      = "${var.project}-glue"
  sagemaker_role_name = "${var.project}-sagemaker"
  airflow_role_name   = "${var.project}-self-hosted-airflow" # not an MWAA execution role (iam.tf)
  variant_name        = "AllTraffic" # endpoint configs created by dkt_train must use the same variant name
  realtime            = var.endpoint_mode == "realtime"
  create_endpoint     = var.model_data_url != ""

  # Images: AWS Deep Learning Containers in the deployment region unless overridden.
  dlc_registry           = "${var.dlc_account_id}.dkr.ecr.${var.region}.amazonaws.com"
  training_cpu_image_uri = coalesce(var.training_image_uri, "${local.dlc_registry}/pytorch-training:2.6.0-cpu-py312")
  training_gpu_image_uri = coalesce(var.training_gpu_image_uri, "${local.dlc_registry}/pytorch-training:2.6.0-gpu-py312")
  inference_image_uri    = coalesce(var.inference_image_uri, "${local.dlc_registry}/pytorch-inference:2.6.0-cpu-py312")
  training_uses_gpu      = can(regex("^ml\\.(g|p)[0-9]", var.training_instance_type))
  training_image_uri     = local.training_uses_gpu ? local.training_gpu_image_uri : local.training_cpu_image_uri

  # ECR repositories SageMaker pulls from, as ARNs: <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>
  ecr_repository_arns = distinct([
    for uri in [local.training_cpu_image_uri, local.training_gpu_image_uri, local.inference_image_uri] :
    format(
      "arn:%s:ecr:%s:%s:repository/%s",
      local.partition,
      regex("^[0-9]+\\.dkr\\.ecr\\.([a-z0-9-]+)\\.", uri)[0],
      regex("^([0-9]+)\\.", uri)[0],
      regex("^[^/]+/([^:@]+)", uri)[0],
    )
  ])

  # SageMaker ARNs (SageMaker lower-cases names in ARNs).
  sagemaker_arn_prefix = "arn:${local.partition}:sagemaker:${var.region}:${local.account_id}"
  sagemaker_name_glob  = "${lower(var.sagemaker_name_prefix)}*"
  endpoint_arn         = "${local.sagemaker_arn_prefix}:endpoint/${lower(var.endpoint_name)}"
  logs_arn_prefix      = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group"

  # The one SSM parameter the DAGs read (kt.config.Settings field names, nothing else).
  ssm_config = {
    lake                       = local.lake_uri
    region                     = var.region
    mastery_table              = aws_dynamodb_table.mastery.name
    history_table              = aws_dynamodb_table.history.name
    endpoint_name              = var.endpoint_name
    sagemaker_enabled          = var.sagemaker_enabled
    sagemaker_role_arn         = aws_iam_role.sagemaker.arn
    training_image_uri         = local.training_image_uri
    inference_image_uri        = local.inference_image_uri
    training_instance_type     = var.training_instance_type
    transform_instance_type    = var.transform_instance_type
    endpoint_mode              = var.endpoint_mode
    endpoint_instance_type     = var.endpoint_instance_type
    endpoint_min_instances     = var.endpoint_min_instances
    serverless_memory_mb       = var.serverless_memory_mb
    serverless_max_concurrency = var.serverless_max_concurrency
    # What dkt_train's endpoint configs must keep from aws_sagemaker_endpoint_configuration.this.
    sagemaker_name_prefix            = var.sagemaker_name_prefix
    kms_key_arn                      = aws_kms_key.this.arn
    data_capture_sampling_percentage = var.data_capture_sampling_percentage
    glue_job_name              = aws_glue_job.this.name
    glue_role_name             = aws_iam_role.glue.name
    glue_script_location       = local.glue_script_uri
    glue_extra_py_files        = local.glue_library_uri
    alarm_topic_arn            = aws_sns_topic.alarms.arn
    keep_versions              = var.keep_versions
  }

  # IAM statements whose resource is "*", by sid, with the reason. tests/test_terraform.py fails on
  # any other statement with a "*" resource. Each statement also carries a comment where it is written.
  iam_star_resource_exceptions = {
    KeyAdministration     = "KMS key policy: the Resource of a key policy is always \"*\", meaning this key."
    CloudWatchLogsUseKey  = "KMS key policy: \"*\" means this key; limited by the logs encryption context."
    AlarmsAndEventsUseKey = "KMS key policy: \"*\" means this key; limited to the CloudWatch and EventBridge services of this account."
    EcrAuthToken          = "ecr:GetAuthorizationToken has no resource-level permissions."
    PutKtMetrics          = "cloudwatch:PutMetricData has no resource-level permissions; limited by the cloudwatch:namespace condition."
    PutGlueMetrics        = "cloudwatch:PutMetricData has no resource-level permissions; limited by the cloudwatch:namespace condition."
    PutSageMakerMetrics   = "cloudwatch:PutMetricData has no resource-level permissions; limited by the cloudwatch:namespace condition."
    DescribeApiLogGroups  = "logs:DescribeLogGroups has no resource-level permissions (API Gateway's logging role)."
  }
}

# IAM roles and least-privilege policies: the Glue job role, the SageMaker execution role (training,
# transform, endpoint), the role of self-hosted Airflow workers (EC2 instance profile or a trusted role;
# not an MWAA execution role), one role per API Gateway integration, and API Gateway's CloudWatch
# logging role. tests/test_iam.py and tests/dags/test_iam_calls.py evaluate every call each role makes
# against these policies, with AWS's action catalogue.
# No statement grants a "*" action; statements with a "*" resource are listed with their reason in
# local.iam_star_resource_exceptions (locals.tf) and commented where they are written.

locals {
  lake_arn             = aws_s3_bucket.lake.arn
  glue_job_arn         = "arn:${local.partition}:glue:${var.region}:${local.account_id}:job/${var.glue_job_name}"
  dynamodb_via_service = "dynamodb.${var.region}.amazonaws.com"
}

# Glue job role

data "aws_iam_policy_document" "glue_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["glue.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "glue" {
  name               = local.glue_role_name
  description        = "Glue job ${var.glue_job_name}: reads raw/ and code, writes processed/."
  assume_role_policy = data.aws_iam_policy_document.glue_assume.json
}

resource "aws_iam_role_policy" "glue" {
  name   = "glue-job"
  role   = aws_iam_role.glue.id
  policy = data.aws_iam_policy_document.glue.json
}

data "aws_iam_policy_document" "glue" {
  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.lake_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["raw/ednet", "raw/ednet/*", "processed/ednet", "processed/ednet/*", "artifacts/glue/*"]
    }
  }

  statement {
    sid       = "LocateLake"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.lake_arn]
  }

  statement {
    sid       = "ReadRawAndCode"
    actions   = ["s3:GetObject"]
    resources = [
      "${local.lake_arn}/raw/ednet/*",
      "${local.lake_arn}/artifacts/glue/*",
      "${local.lake_arn}/${local.skill_mappings_key}",
    ]
  }

  statement {
    sid       = "WriteProcessedAndTemp"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [
      "${local.lake_arn}/processed/ednet/*",
      "${local.lake_arn}/artifacts/glue/tmp/*",
    ]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }

  statement {
    sid     = "WriteGlueLogs"
    actions = [
      "logs:AssociateKmsKey",
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:PutLogEvents",
    ]
    resources = ["${local.logs_arn_prefix}:/aws-glue/*"]
  }

  # "*" resource: cloudwatch:PutMetricData has no resource-level permissions (see locals.tf).
  statement {
    sid       = "PutGlueMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["Glue"]
    }
  }
}

# SageMaker execution role: training jobs, batch transform and the endpoint's model.

data "aws_iam_policy_document" "sagemaker_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "sagemaker" {
  name               = local.sagemaker_role_name
  description        = "SageMaker training, transform and endpoint: lake prefixes, key, DLC images, logs."
  assume_role_policy = data.aws_iam_policy_document.sagemaker_assume.json
}

resource "aws_iam_role_policy" "sagemaker" {
  name   = "sagemaker-execution"
  role   = aws_iam_role.sagemaker.id
  policy = data.aws_iam_policy_document.sagemaker.json
}

data "aws_iam_policy_document" "sagemaker" {
  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.lake_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["processed/*", "models/*", "artifacts/sagemaker/*", "inference/batch/*", "monitoring/data-capture/*"]
    }
  }

  statement {
    sid       = "ReadTrainingAndInferenceInputs"
    actions   = ["s3:GetObject"]
    resources = [
      "${local.lake_arn}/processed/*",
      "${local.lake_arn}/models/*",
      "${local.lake_arn}/artifacts/sagemaker/*",
      "${local.lake_arn}/inference/batch/*",
    ]
  }

  statement {
    sid       = "WriteModelsOutputsAndCapture"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [
      "${local.lake_arn}/models/*",
      "${local.lake_arn}/inference/batch/*",
      "${local.lake_arn}/monitoring/data-capture/*",
    ]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }

  statement {
    sid       = "GrantKeyToVolumes"
    actions   = ["kms:CreateGrant"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }

  statement {
    sid       = "PullDlcImages"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = local.ecr_repository_arns
  }

  # "*" resource: ecr:GetAuthorizationToken has no resource-level permissions (see locals.tf).
  statement {
    sid       = "EcrAuthToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid     = "WriteSageMakerLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:DescribeLogStreams",
      "logs:PutLogEvents",
    ]
    resources = ["${local.logs_arn_prefix}:/aws/sagemaker/*"]
  }

  # "*" resource: cloudwatch:PutMetricData has no resource-level permissions (see locals.tf).
  statement {
    sid       = "PutSageMakerMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringLike"
      variable = "cloudwatch:namespace"
      values   = ["/aws/sagemaker/*"]
    }
  }
}

# Self-hosted Airflow workers: exactly the calls the kt DAGs make (tests/dags/test_iam_calls.py records
# them). Not an MWAA execution role: MWAA also needs its log groups, the Celery SQS queue, metrics and
# the DAG bucket, which this role does not grant, so it does not trust MWAA either.

data "aws_iam_policy_document" "airflow_assume" {
  statement {
    sid     = "SelfHostedOnEc2"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = length(var.airflow_trusted_role_arns) > 0 ? [1] : []

    content {
      sid     = "TrustedRoles"
      actions = ["sts:AssumeRole"]

      principals {
        type        = "AWS"
        identifiers = var.airflow_trusted_role_arns
      }
    }
  }
}

resource "aws_iam_role" "airflow" {
  name               = local.airflow_role_name
  description        = "Self-hosted Airflow workers (EC2 or a trusted role): what the kt DAGs call."
  assume_role_policy = data.aws_iam_policy_document.airflow_assume.json
}

resource "aws_iam_instance_profile" "airflow" {
  name = local.airflow_role_name
  role = aws_iam_role.airflow.name
}

resource "aws_iam_role_policy" "airflow" {
  name   = "kt-dags"
  role   = aws_iam_role.airflow.id
  policy = data.aws_iam_policy_document.airflow.json
}

data "aws_iam_policy_document" "airflow" {
  # The job exists (aws_glue_job.this): GlueJobOperator only reads it, starts it and polls the run.
  statement {
    sid       = "RunGlueJob"
    actions   = ["glue:GetJob", "glue:GetJobRun", "glue:StartJobRun"]
    resources = [local.glue_job_arn]
  }

  statement {
    sid       = "PassSageMakerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.sagemaker.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["sagemaker.amazonaws.com"]
    }
  }

  statement {
    sid     = "TrainingJobs"
    actions = [
      "sagemaker:AddTags",
      "sagemaker:CreateTrainingJob",
      "sagemaker:DescribeTrainingJob",
      "sagemaker:StopTrainingJob",
    ]
    resources = ["${local.sagemaker_arn_prefix}:training-job/${local.sagemaker_name_glob}"]
  }

  statement {
    sid     = "Models"
    actions = [
      "sagemaker:AddTags",
      "sagemaker:CreateModel",
      "sagemaker:DescribeModel",
    ]
    resources = ["${local.sagemaker_arn_prefix}:model/${local.sagemaker_name_glob}"]
  }

  statement {
    sid     = "EndpointConfigs"
    actions = [
      "sagemaker:AddTags",
      "sagemaker:CreateEndpointConfig",
      "sagemaker:DescribeEndpointConfig",
    ]
    resources = ["${local.sagemaker_arn_prefix}:endpoint-config/${local.sagemaker_name_glob}"]
  }

  # IAM checks CreateEndpoint and UpdateEndpoint on the endpoint and on the endpoint config it names
  # (AWS's service authorization reference lists both resource types as required for each action).
  statement {
    sid     = "Endpoint"
    actions = [
      "sagemaker:CreateEndpoint",
      "sagemaker:DescribeEndpoint",
      "sagemaker:UpdateEndpoint",
    ]
    resources = [local.endpoint_arn]
  }

  statement {
    sid       = "EndpointFromConfigs"
    actions   = ["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"]
    resources = ["${local.sagemaker_arn_prefix}:endpoint-config/${local.sagemaker_name_glob}"]
  }

  statement {
    sid     = "TransformJobs"
    actions = [
      "sagemaker:AddTags",
      "sagemaker:CreateTransformJob",
      "sagemaker:DescribeTransformJob",
    ]
    resources = ["${local.sagemaker_arn_prefix}:transform-job/${local.sagemaker_name_glob}"]
  }

  # The training operator tails the job's log streams. DescribeLogStreams is checked on the log group,
  # GetLogEvents on the stream (<job name>/algo-1-<time>).
  statement {
    sid       = "DescribeTrainingLogStreams"
    actions   = ["logs:DescribeLogStreams"]
    resources = ["${local.logs_arn_prefix}:/aws/sagemaker/TrainingJobs"]
  }

  statement {
    sid       = "ReadTrainingLogs"
    actions   = ["logs:GetLogEvents"]
    resources = ["${local.logs_arn_prefix}:/aws/sagemaker/TrainingJobs:log-stream:${local.sagemaker_name_glob}"]
  }

  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [local.lake_arn]
  }

  statement {
    sid       = "ReadWriteLake"
    actions   = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = ["${local.lake_arn}/*"]
  }

  statement {
    sid       = "ReadHistory"
    actions   = ["dynamodb:Query"]
    resources = [aws_dynamodb_table.history.arn, "${aws_dynamodb_table.history.arn}/index/by_day"]
  }

  statement {
    sid       = "WriteMastery"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"] # kt.dynamo.get_state (the refresh state); put_mastery_conditional: an update keeps the Phase 1 counters
    resources = [aws_dynamodb_table.mastery.arn]
  }

  # "*" resource: cloudwatch:PutMetricData has no resource-level permissions (see locals.tf).
  statement {
    sid       = "PutKtMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["KT"]
    }
  }

  statement {
    sid       = "ReadConfig"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.this.arn]
  }

  statement {
    sid       = "NotifyAlarmTopic"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
  }

  # The lake (SSE-KMS), the tables and the alarm topic are encrypted with the key.
  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }

  # SageMaker creates grants with the caller's permissions for the KMS key of an endpoint config.
  statement {
    sid       = "GrantKeyToSageMaker"
    actions   = ["kms:CreateGrant"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
}

# API Gateway integrations: one role each, one action on one resource (plus, for the tables, the
# KMS calls DynamoDB makes with the caller's identity on the customer managed key).

# No aws:SourceAccount condition here: API Gateway does not document setting it when it assumes
# integration credentials. Configuring a role on an integration needs iam:PassRole in this account.
data "aws_iam_policy_document" "apigateway_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["apigateway.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "api_get_mastery" {
  name               = "${var.project}-api-get-mastery"
  description        = "API Gateway GET /api/kt/mastery: dynamodb:GetItem on ${var.mastery_table_name}."
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy" "api_get_mastery" {
  name   = "get-mastery"
  role   = aws_iam_role.api_get_mastery.id
  policy = data.aws_iam_policy_document.api_get_mastery.json
}

data "aws_iam_policy_document" "api_get_mastery" {
  statement {
    sid       = "GetMasteryItem"
    actions   = ["dynamodb:GetItem"]
    resources = [aws_dynamodb_table.mastery.arn]
  }

  statement {
    sid       = "TableKeyViaDynamoDB"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.dynamodb_via_service]
    }
  }
}

resource "aws_iam_role" "api_post_answer" {
  name               = "${var.project}-api-post-answer"
  description        = "API Gateway POST /api/kt/answers (TransactWriteItems): dynamodb:PutItem on ${var.history_table_name}, dynamodb:UpdateItem (Phase 1 counters) on ${var.mastery_table_name}."
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy" "api_post_answer" {
  name   = "post-answer"
  role   = aws_iam_role.api_post_answer.id
  policy = data.aws_iam_policy_document.api_post_answer.json
}

data "aws_iam_policy_document" "api_post_answer" {
  statement {
    sid       = "PutAnswerItem"
    actions   = ["dynamodb:PutItem"]
    resources = [aws_dynamodb_table.history.arn]
  }

  # The same TransactWriteItems adds to the Phase 1 counters of the user's kt-mastery row: IAM authorises each
  # write of a transaction as its single-item action (TransactWriteItems has none of its own).
  statement {
    sid       = "CountAnswerOnMasteryRow"
    actions   = ["dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.mastery.arn]
  }

  statement {
    sid       = "TableKeyViaDynamoDB"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.dynamodb_via_service]
    }
  }
}

resource "aws_iam_role" "api_invoke_endpoint" {
  name               = "${var.project}-api-invoke-endpoint"
  description        = "API Gateway POST /api/kt/mastery: sagemaker:InvokeEndpoint on ${var.endpoint_name}."
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy" "api_invoke_endpoint" {
  name   = "invoke-endpoint"
  role   = aws_iam_role.api_invoke_endpoint.id
  policy = data.aws_iam_policy_document.api_invoke_endpoint.json
}

data "aws_iam_policy_document" "api_invoke_endpoint" {
  statement {
    sid       = "InvokeEndpoint"
    actions   = ["sagemaker:InvokeEndpoint"]
    resources = [local.endpoint_arn]
  }
}

# API Gateway's region-wide CloudWatch role (required for access and execution logs).

resource "aws_iam_role" "api_cloudwatch" {
  count              = var.create_api_gateway_account ? 1 : 0
  name               = "${var.project}-api-cloudwatch"
  description        = "API Gateway account setting: writes API access and execution logs."
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy" "api_cloudwatch" {
  count  = var.create_api_gateway_account ? 1 : 0
  name   = "api-logs"
  role   = aws_iam_role.api_cloudwatch[0].id
  policy = data.aws_iam_policy_document.api_cloudwatch.json
}

data "aws_iam_policy_document" "api_cloudwatch" {
  # Log group ARNs: the group itself (CreateLogGroup, DescribeLogStreams) and its streams (":*").
  statement {
    sid     = "WriteApiLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:DescribeLogStreams",
      "logs:PutLogEvents",
    ]
    resources = [
      "${local.logs_arn_prefix}:API-Gateway-Execution-Logs_*",
      aws_cloudwatch_log_group.api_access.arn,
      "${aws_cloudwatch_log_group.api_access.arn}:*",
    ]
  }

  # "*" resource: logs:DescribeLogGroups has no resource-level permissions (see locals.tf).
  statement {
    sid       = "DescribeApiLogGroups"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"]
  }
}

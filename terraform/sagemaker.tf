# The SageMaker model, endpoint configuration and endpoint `pythagoras-dkt-endpoint` (serverless by
# default, realtime with autoscaling as an option), created from var.model_data_url. Training and
# transform jobs are created by Airflow with the role and images from iam.tf / locals.tf.
#
# Ownership: Terraform creates the first endpoint; dkt_train later points it at new endpoint configs
# (UpdateEndpoint). The endpoint therefore ignores changes to endpoint_config_name, or every plan
# would roll the endpoint back to Terraform's config and undo a promotion. With model_data_url
# empty, Terraform creates none of these and dkt_train creates the endpoint on its first promotion.
# dkt_train's endpoint configs (kt.aws_requests.endpoint_config) carry the same variant, key and
# data capture, from the SSM config; tests/test_promotion_parity.py compares them field by field.

resource "aws_sagemaker_model" "this" {
  #checkov:skip=CKV_AWS_370:The PyTorch inference container installs code/requirements.txt from model.tar.gz at start-up (docs/contracts.md section 5.4), which needs network access.
  count              = local.create_endpoint ? 1 : 0
  name               = "${var.sagemaker_name_prefix}-tf-${substr(md5(var.model_data_url), 0, 8)}"
  execution_role_arn = aws_iam_role.sagemaker.arn

  primary_container {
    image          = local.inference_image_uri
    model_data_url = var.model_data_url
    # The same as kt.aws_requests.model_environment (tests/test_promotion_parity.py): TorchServe's default
    # response limit (6,553,500 bytes) would kill the worker on a large batch transform answer.
    environment = {
      SAGEMAKER_PROGRAM          = "inference.py"
      SAGEMAKER_SUBMIT_DIRECTORY = "/opt/ml/model/code"
      SAGEMAKER_REGION           = var.region
      TS_MAX_RESPONSE_SIZE       = "104857600"
    }
  }
}

resource "aws_sagemaker_endpoint_configuration" "this" {
  count       = local.create_endpoint ? 1 : 0
  name_prefix = "${var.sagemaker_name_prefix}-tf-"
  # Instance types with local NVMe storage (ml.g4dn.*, the realtime default) encrypt it in hardware
  # and SageMaker rejects a KMS key for them; serverless endpoints take the key.
  kms_key_arn = local.realtime ? null : aws_kms_key.this.arn

  production_variants {
    variant_name           = local.variant_name
    model_name             = aws_sagemaker_model.this[0].name
    instance_type          = local.realtime ? var.endpoint_instance_type : null
    initial_instance_count = local.realtime ? var.endpoint_min_instances : null

    dynamic "serverless_config" {
      for_each = local.realtime ? [] : [1]

      content {
        memory_size_in_mb = var.serverless_memory_mb
        max_concurrency   = var.serverless_max_concurrency
      }
    }
  }

  # Serverless endpoints do not support data capture (AWS's Serverless Inference feature exclusions);
  # there, kt_drift_check reads only the tutor's answers copied to events/answers/. Realtime: it also
  # reads the captured requests under <data_capture_uri><endpoint>/AllTraffic/yyyy/mm/dd/hh/.
  dynamic "data_capture_config" {
    for_each = local.realtime ? [1] : []

    content {
      enable_capture              = true
      initial_sampling_percentage = var.data_capture_sampling_percentage
      destination_s3_uri          = local.data_capture_uri
      kms_key_id                  = aws_kms_key.this.arn

      capture_options {
        capture_mode = "Input"
      }

      capture_options {
        capture_mode = "Output"
      }

      capture_content_type_header {
        json_content_types = ["application/json"]
      }
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_sagemaker_endpoint" "this" {
  count                = local.create_endpoint ? 1 : 0
  name                 = var.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.this[0].name

  lifecycle {
    # dkt_train deploys new models with UpdateEndpoint; see the header of this file.
    ignore_changes = [endpoint_config_name]
  }
}

# Realtime only: scale the variant on invocations per instance.

resource "aws_appautoscaling_target" "endpoint" {
  count              = local.create_endpoint && local.realtime ? 1 : 0
  service_namespace  = "sagemaker"
  resource_id        = "endpoint/${aws_sagemaker_endpoint.this[0].name}/variant/${local.variant_name}"
  scalable_dimension = "sagemaker:variant:DesiredInstanceCount"
  min_capacity       = var.endpoint_min_instances
  max_capacity       = var.endpoint_max_instances
}

resource "aws_appautoscaling_policy" "endpoint" {
  count              = local.create_endpoint && local.realtime ? 1 : 0
  name               = "${var.endpoint_name}-invocations-per-instance"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.endpoint[0].service_namespace
  resource_id        = aws_appautoscaling_target.endpoint[0].resource_id
  scalable_dimension = aws_appautoscaling_target.endpoint[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.endpoint_invocations_per_instance_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "SageMakerVariantInvocationsPerInstance"
    }
  }
}

# CloudWatch alarms (to the SNS topic) and one dashboard: endpoint latency and error rate, the KT
# drift score published by kt_drift_check, and API Gateway 5XX. Glue failures: eventbridge.tf.

locals {
  endpoint_dimensions = {
    EndpointName = var.endpoint_name
    VariantName  = local.variant_name
  }
  api_dimensions = {
    ApiName = aws_api_gateway_rest_api.this.name
    Stage   = aws_api_gateway_stage.this.stage_name
  }
}

resource "aws_cloudwatch_metric_alarm" "endpoint_latency" {
  alarm_name          = "${var.project}-endpoint-latency-p99"
  alarm_description   = "p99 ModelLatency of ${var.endpoint_name} above 500 ms (the metric is in microseconds)."
  namespace           = "AWS/SageMaker"
  metric_name         = "ModelLatency"
  dimensions          = local.endpoint_dimensions
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 500000 # microseconds = 500 ms
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "endpoint_error_rate" {
  alarm_name          = "${var.project}-endpoint-error-rate"
  alarm_description   = "More than 1% of ${var.endpoint_name} invocations end in a 5XX."
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 1 # percent
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]

  metric_query {
    id          = "error_rate"
    expression  = "IF(invocations > 0, 100 * errors / invocations, 0)"
    label       = "5XX errors per 100 invocations"
    return_data = true
  }

  metric_query {
    id = "errors"

    metric {
      namespace   = "AWS/SageMaker"
      metric_name = "Invocation5XXErrors"
      dimensions  = local.endpoint_dimensions
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "invocations"

    metric {
      namespace   = "AWS/SageMaker"
      metric_name = "Invocations"
      dimensions  = local.endpoint_dimensions
      period      = 300
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "drift" {
  alarm_name          = "${var.project}-drift"
  alarm_description   = "KT DriftScore (PSI of inputs/predictions vs the model's reference) above ${var.drift_threshold}; kt_drift_check publishes it daily."
  namespace           = "KT"
  metric_name         = "DriftScore"
  dimensions          = { EndpointName = var.endpoint_name }
  statistic           = "Maximum"
  period              = 86400
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.drift_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.project}-api-5xx"
  alarm_description   = "More than 1% of ${aws_api_gateway_rest_api.this.name} API requests end in a 5XX."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  dimensions          = local.api_dimensions
  statistic           = "Average" # 5XXError is 0 or 1 per request, so the average is the error rate
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0.01
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.project

  dashboard_body = jsonencode({
    widgets = [
      {
        type       = "metric"
        x          = 0
        y          = 0
        width      = 12
        height     = 6
        properties = {
          title   = "Endpoint latency (p50/p99, microseconds)"
          region  = var.region
          view    = "timeSeries"
          metrics = [
            ["AWS/SageMaker", "ModelLatency", "EndpointName", var.endpoint_name, "VariantName", local.variant_name, { stat = "p50" }],
            ["...", { stat = "p99" }],
          ]
          annotations = { horizontal = [{ label = "500 ms", value = 500000 }] }
        }
      },
      {
        type       = "metric"
        x          = 12
        y          = 0
        width      = 12
        height     = 6
        properties = {
          title   = "Endpoint invocations and errors"
          region  = var.region
          view    = "timeSeries"
          stat    = "Sum"
          metrics = [
            ["AWS/SageMaker", "Invocations", "EndpointName", var.endpoint_name, "VariantName", local.variant_name],
            [".", "Invocation4XXErrors", ".", ".", ".", "."],
            [".", "Invocation5XXErrors", ".", ".", ".", "."],
          ]
        }
      },
      {
        type       = "metric"
        x          = 0
        y          = 6
        width      = 12
        height     = 6
        properties = {
          title   = "API requests, 4XX, 5XX"
          region  = var.region
          view    = "timeSeries"
          stat    = "Sum"
          metrics = [
            ["AWS/ApiGateway", "Count", "ApiName", aws_api_gateway_rest_api.this.name, "Stage", aws_api_gateway_stage.this.stage_name],
            [".", "4XXError", ".", ".", ".", "."],
            [".", "5XXError", ".", ".", ".", "."],
          ]
        }
      },
      {
        type       = "metric"
        x          = 12
        y          = 6
        width      = 12
        height     = 6
        properties = {
          title   = "Drift score (KT)"
          region  = var.region
          view    = "timeSeries"
          stat    = "Maximum"
          period  = 86400
          metrics = [
            ["KT", "DriftScore", "EndpointName", var.endpoint_name],
          ]
          annotations = { horizontal = [{ label = "threshold", value = var.drift_threshold }] }
        }
      },
      {
        type       = "metric"
        x          = 0
        y          = 12
        width      = 12
        height     = 6
        properties = {
          title   = "DynamoDB consumed capacity"
          region  = var.region
          view    = "timeSeries"
          stat    = "Sum"
          metrics = [
            ["AWS/DynamoDB", "ConsumedReadCapacityUnits", "TableName", aws_dynamodb_table.mastery.name],
            [".", "ConsumedWriteCapacityUnits", ".", aws_dynamodb_table.mastery.name],
            [".", "ConsumedReadCapacityUnits", ".", aws_dynamodb_table.history.name],
            [".", "ConsumedWriteCapacityUnits", ".", aws_dynamodb_table.history.name],
          ]
        }
      },
      {
        type       = "metric"
        x          = 12
        y          = 12
        width      = 12
        height     = 6
        properties = {
          title   = "Glue job ${var.glue_job_name}: failed tasks"
          region  = var.region
          view    = "timeSeries"
          stat    = "Sum"
          metrics = [
            ["Glue", "glue.driver.aggregate.numFailedTasks", "JobName", aws_glue_job.this.name, "JobRunId", "ALL", "Type", "count"],
          ]
        }
      },
    ]
  })
}

# EventBridge rule: a FAILED or TIMEOUT run of the Glue job notifies the alarm topic.

resource "aws_cloudwatch_event_rule" "glue_job_failed" {
  name        = "${var.project}-glue-job-failed"
  description = "Glue job ${var.glue_job_name} ended FAILED or TIMEOUT."

  event_pattern = jsonencode({
    source        = ["aws.glue"]
    "detail-type" = ["Glue Job State Change"]
    detail        = {
      jobName = [aws_glue_job.this.name]
      state   = ["FAILED", "TIMEOUT"]
    }
  })
}

resource "aws_cloudwatch_event_target" "glue_job_failed" {
  rule      = aws_cloudwatch_event_rule.glue_job_failed.name
  target_id = "alarm-topic"
  arn       = aws_sns_topic.alarms.arn

  input_transformer {
    input_paths = {
      job    = "$.detail.jobName"
      run    = "$.detail.jobRunId"
      state  = "$.detail.state"
      reason = "$.detail.message"
    }
    input_template = "\"Glue job <job> run <run> ended <state>: <reason>\""
  }
}

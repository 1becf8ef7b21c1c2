# The REST API of docs/contracts.md section 9, integrated directly with AWS services (no Lambda):
#   GET  /api/kt/mastery?user_id=U  -> DynamoDB GetItem on kt-mastery: the DKT row, or (DKT off, or no DKT row yet)
#                                      the Bayesian estimate the response template computes from the row's counters
#   POST /api/kt/mastery            -> SageMaker runtime InvokeEndpoint (body passed through)
#   POST /api/kt/answers            -> DynamoDB TransactWriteItems: the answer on kt-history once per answer_id
#                                      (marker items) and the Phase 1 counters on the user's kt-mastery row
# API key + usage plan, request validators, JSON error bodies, access logs (KMS), X-Ray, metrics.

locals {
  api_templates = "${path.module}/templates"
  json          = "application/json"

  # The skill catalog of the GET template's Bayesian estimate: the seed's skill mappings, as the Glue job reads them.
  api_skill_topics = jsondecode(file("${path.module}/../glue/skill_mappings.json"))

  # Each route's answers. responses: its integration responses by status (pattern: the integration's HTTP status
  # they answer, null for the default one; template: the body, null to pass the integration's body through).
  # overrides: the other statuses its templates set through $context.responseOverride.status. The route's
  # method responses are both (tests/test_terraform.py renders the templates to check the overrides).
  api_routes = {
    get_mastery = {
      responses = {
        "200" = { pattern = null, template = templatefile("${local.api_templates}/get_mastery_response.vtl", {
          skill_topics = jsonencode(local.api_skill_topics)
          topics       = jsonencode(sort(distinct(values(local.api_skill_topics))))
          dkt_enabled  = var.sagemaker_enabled
        }) }
        "400" = { pattern = "4\\d{2}", template = "{\"error\": \"invalid user_id\", \"field\": \"user_id\"}" }
        "502" = { pattern = "5\\d{2}", template = "{\"error\": \"mastery store unavailable\", \"field\": null}" }
      }
      overrides = ["404"] # no item
    }
    post_mastery = {
      responses = {
        "200" = { pattern = null, template = null }
        "400" = { pattern = "4\\d{2}", template = file("${local.api_templates}/post_mastery_error.vtl") }
        "502" = { pattern = "5\\d{2}", template = "{\"error\": \"model endpoint unavailable\", \"field\": null}" }
      }
      # The model's own 4xx status, passed through from InvokeEndpoint's 424 ModelError (kt.inference.RequestError).
      overrides = ["409", "413", "415"]
    }
    post_answer = {
      responses = {
        "200" = { pattern = null, template = "{\"status\": \"stored\"}" }
        "400" = { pattern = "4\\d{2}", template = file("${local.api_templates}/post_answer_error.vtl") }
        "502" = { pattern = "5\\d{2}", template = "{\"error\": \"answer store unavailable\", \"field\": null}" }
      }
      overrides = ["409"] # post_answer_error.vtl: a repeated answer is a 200, the same answer_id with other content a 409
    }
  }
}

resource "aws_api_gateway_rest_api" "this" {
  name        = var.project
  description = "Knowledge tracing API (${var.environment}): mastery and tutor answers."

  endpoint_configuration {
    types = ["REGIONAL"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_api_gateway_resource" "api" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_rest_api.this.root_resource_id
  path_part   = "api"
}

resource "aws_api_gateway_resource" "kt" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.api.id
  path_part   = "kt"
}

resource "aws_api_gateway_resource" "mastery" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.kt.id
  path_part   = "mastery"
}

resource "aws_api_gateway_resource" "answers" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.kt.id
  path_part   = "answers"
}

# Validation: request parameters for GET, JSON bodies for POST; failures answer {"error", "field"}.

resource "aws_api_gateway_request_validator" "params" {
  rest_api_id                 = aws_api_gateway_rest_api.this.id
  name                        = "params"
  validate_request_parameters = true
}

resource "aws_api_gateway_request_validator" "body" {
  rest_api_id           = aws_api_gateway_rest_api.this.id
  name                  = "body"
  validate_request_body = true
}

resource "aws_api_gateway_model" "answer" {
  rest_api_id  = aws_api_gateway_rest_api.this.id
  name         = "Answer"
  description  = "One tutor answer."
  content_type = local.json
  schema       = file("${local.api_templates}/answer.schema.json")
}

resource "aws_api_gateway_model" "mastery_request" {
  rest_api_id  = aws_api_gateway_rest_api.this.id
  name         = "MasteryRequest"
  description  = "A user_sequence for live mastery."
  content_type = local.json
  schema       = file("${local.api_templates}/mastery_request.schema.json")
}

resource "aws_api_gateway_gateway_response" "bad_parameters" {
  rest_api_id   = aws_api_gateway_rest_api.this.id
  response_type = "BAD_REQUEST_PARAMETERS"
  status_code   = "400"

  response_templates = {
    (local.json) = "{\"error\": $context.error.messageString, \"field\": \"user_id\"}"
  }
}

resource "aws_api_gateway_gateway_response" "bad_body" {
  rest_api_id   = aws_api_gateway_rest_api.this.id
  response_type = "BAD_REQUEST_BODY"
  status_code   = "400"

  response_templates = {
    (local.json) = "{\"error\": $context.error.messageString, \"field\": \"body\"}"
  }
}

# GET /api/kt/mastery?user_id=U

resource "aws_api_gateway_method" "get_mastery" {
  rest_api_id          = aws_api_gateway_rest_api.this.id
  resource_id          = aws_api_gateway_resource.mastery.id
  http_method          = "GET"
  authorization        = "NONE"
  api_key_required     = true
  request_validator_id = aws_api_gateway_request_validator.params.id

  request_parameters = {
    "method.request.querystring.user_id" = true
  }
}

resource "aws_api_gateway_integration" "get_mastery" {
  rest_api_id             = aws_api_gateway_rest_api.this.id
  resource_id             = aws_api_gateway_resource.mastery.id
  http_method             = aws_api_gateway_method.get_mastery.http_method
  type                    = "AWS"
  integration_http_method = "POST"
  uri                     = "arn:${local.partition}:apigateway:${var.region}:dynamodb:action/GetItem"
  credentials             = aws_iam_role.api_get_mastery.arn
  passthrough_behavior    = "NEVER"

  request_templates = {
    (local.json) = templatefile("${local.api_templates}/get_mastery_request.vtl", { table = aws_dynamodb_table.mastery.name })
  }
}

resource "aws_api_gateway_method_response" "get_mastery" {
  for_each    = toset(concat(keys(local.api_routes.get_mastery.responses), local.api_routes.get_mastery.overrides))
  rest_api_id = aws_api_gateway_rest_api.this.id
  resource_id = aws_api_gateway_resource.mastery.id
  http_method = aws_api_gateway_method.get_mastery.http_method
  status_code = each.key

  response_models = {
    (local.json) = "Empty"
  }
}

resource "aws_api_gateway_integration_response" "get_mastery" {
  for_each           = local.api_routes.get_mastery.responses
  rest_api_id        = aws_api_gateway_rest_api.this.id
  resource_id        = aws_api_gateway_resource.mastery.id
  http_method        = aws_api_gateway_method.get_mastery.http_method
  status_code        = aws_api_gateway_method_response.get_mastery[each.key].status_code
  selection_pattern  = each.value.pattern
  response_templates = each.value.template == null ? null : { (local.json) = each.value.template }

  depends_on = [aws_api_gateway_integration.get_mastery]
}

# POST /api/kt/mastery -> InvokeEndpoint

resource "aws_api_gateway_method" "post_mastery" {
  rest_api_id          = aws_api_gateway_rest_api.this.id
  resource_id          = aws_api_gateway_resource.mastery.id
  http_method          = "POST"
  authorization        = "NONE"
  api_key_required     = true
  request_validator_id = aws_api_gateway_request_validator.body.id

  request_models = {
    (local.json) = aws_api_gateway_model.mastery_request.name
  }

  request_parameters = {
    "method.request.header.Content-Type" = false
  }
}

resource "aws_api_gateway_integration" "post_mastery" {
  rest_api_id             = aws_api_gateway_rest_api.this.id
  resource_id             = aws_api_gateway_resource.mastery.id
  http_method             = aws_api_gateway_method.post_mastery.http_method
  type                    = "AWS"
  integration_http_method = "POST"
  uri                     = "arn:${local.partition}:apigateway:${var.region}:runtime.sagemaker:path//endpoints/${var.endpoint_name}/invocations"
  credentials             = aws_iam_role.api_invoke_endpoint.arn
  passthrough_behavior    = "WHEN_NO_TEMPLATES"

  # The body goes through untouched; the model answers 415 to a wrong content type (docs/contracts.md section 6.3).
  request_parameters = {
    "integration.request.header.Content-Type" = "method.request.header.Content-Type"
  }
}

resource "aws_api_gateway_method_response" "post_mastery" {
  for_each    = toset(concat(keys(local.api_routes.post_mastery.responses), local.api_routes.post_mastery.overrides))
  rest_api_id = aws_api_gateway_rest_api.this.id
  resource_id = aws_api_gateway_resource.mastery.id
  http_method = aws_api_gateway_method.post_mastery.http_method
  status_code = each.key

  response_models = {
    (local.json) = "Empty"
  }
}

resource "aws_api_gateway_integration_response" "post_mastery" {
  for_each           = local.api_routes.post_mastery.responses
  rest_api_id        = aws_api_gateway_rest_api.this.id
  resource_id        = aws_api_gateway_resource.mastery.id
  http_method        = aws_api_gateway_method.post_mastery.http_method
  status_code        = aws_api_gateway_method_response.post_mastery[each.key].status_code
  selection_pattern  = each.value.pattern
  response_templates = each.value.template == null ? null : { (local.json) = each.value.template }

  depends_on = [aws_api_gateway_integration.post_mastery]
}

# POST /api/kt/answers -> TransactWriteItems

resource "aws_api_gateway_method" "post_answer" {
  rest_api_id          = aws_api_gateway_rest_api.this.id
  resource_id          = aws_api_gateway_resource.answers.id
  http_method          = "POST"
  authorization        = "NONE"
  api_key_required     = true
  request_validator_id = aws_api_gateway_request_validator.body.id

  request_models = {
    (local.json) = aws_api_gateway_model.answer.name
  }
}

resource "aws_api_gateway_integration" "post_answer" {
  rest_api_id             = aws_api_gateway_rest_api.this.id
  resource_id             = aws_api_gateway_resource.answers.id
  http_method             = aws_api_gateway_method.post_answer.http_method
  type                    = "AWS"
  integration_http_method = "POST"
  uri                     = "arn:${local.partition}:apigateway:${var.region}:dynamodb:action/TransactWriteItems"
  credentials             = aws_iam_role.api_post_answer.arn
  passthrough_behavior    = "NEVER"

  request_templates = {
    (local.json) = templatefile("${local.api_templates}/post_answer_request.vtl", {
      history_table = aws_dynamodb_table.history.name
      mastery_table = aws_dynamodb_table.mastery.name
    })
  }
}

resource "aws_api_gateway_method_response" "post_answer" {
  for_each    = toset(concat(keys(local.api_routes.post_answer.responses), local.api_routes.post_answer.overrides))
  rest_api_id = aws_api_gateway_rest_api.this.id
  resource_id = aws_api_gateway_resource.answers.id
  http_method = aws_api_gateway_method.post_answer.http_method
  status_code = each.key

  response_models = {
    (local.json) = "Empty"
  }
}

resource "aws_api_gateway_integration_response" "post_answer" {
  for_each           = local.api_routes.post_answer.responses
  rest_api_id        = aws_api_gateway_rest_api.this.id
  resource_id        = aws_api_gateway_resource.answers.id
  http_method        = aws_api_gateway_method.post_answer.http_method
  status_code        = aws_api_gateway_method_response.post_answer[each.key].status_code
  selection_pattern  = each.value.pattern
  response_templates = each.value.template == null ? null : { (local.json) = each.value.template }

  depends_on = [aws_api_gateway_integration.post_answer]
}

# Deployment, stage, logging, metrics

resource "aws_api_gateway_deployment" "this" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  description = "Redeployed when any route, integration, template or model changes."

  triggers = {
    redeployment = sha1(jsonencode([
      aws_api_gateway_resource.mastery,
      aws_api_gateway_resource.answers,
      aws_api_gateway_method.get_mastery,
      aws_api_gateway_method.post_mastery,
      aws_api_gateway_method.post_answer,
      aws_api_gateway_integration.get_mastery,
      aws_api_gateway_integration.post_mastery,
      aws_api_gateway_integration.post_answer,
      aws_api_gateway_method_response.get_mastery,
      aws_api_gateway_method_response.post_mastery,
      aws_api_gateway_method_response.post_answer,
      aws_api_gateway_integration_response.get_mastery,
      aws_api_gateway_integration_response.post_mastery,
      aws_api_gateway_integration_response.post_answer,
      aws_api_gateway_model.answer,
      aws_api_gateway_model.mastery_request,
      aws_api_gateway_gateway_response.bad_parameters,
      aws_api_gateway_gateway_response.bad_body,
    ]))
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${var.project}/access"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

resource "aws_api_gateway_account" "this" {
  count               = var.create_api_gateway_account ? 1 : 0
  cloudwatch_role_arn = aws_iam_role.api_cloudwatch[0].arn
}

resource "aws_api_gateway_stage" "this" {
  #checkov:skip=CKV_AWS_120:No stage cache: GET mastery is one DynamoDB GetItem (single-digit ms) and a cache would serve stale rows after the nightly refresh for ~15 USD/month.
  #checkov:skip=CKV2_AWS_77:The attached WAF has the Log4j managed rules (KnownBadInputs); the check also demands AnonymousIpList, whose hosting-provider list would block the tutor's own server-side calls from cloud hosts.
  #checkov:skip=CKV2_AWS_51:Client certificates authenticate API Gateway to HTTP backends; every integration here is an AWS service integration signed with its IAM role.
  rest_api_id          = aws_api_gateway_rest_api.this.id
  deployment_id        = aws_api_gateway_deployment.this.id
  stage_name           = var.api_stage_name
  description          = "${var.project} ${var.environment}"
  xray_tracing_enabled = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format          = jsonencode({
      requestId          = "$context.requestId"
      ip                 = "$context.identity.sourceIp"
      apiKeyId           = "$context.identity.apiKeyId"
      requestTime        = "$context.requestTime"
      httpMethod         = "$context.httpMethod"
      resourcePath       = "$context.resourcePath"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      latencyMs          = "$context.responseLatency"
      integrationStatus  = "$context.integration.status"
      integrationLatency = "$context.integration.latency"
      error              = "$context.error.message"
    })
  }

  depends_on = [aws_api_gateway_account.this]
}

resource "aws_api_gateway_method_settings" "this" {
  #checkov:skip=CKV_AWS_225:No method cache, as for the stage (CKV_AWS_120): mastery rows change nightly and a GetItem is already fast.
  rest_api_id = aws_api_gateway_rest_api.this.id
  stage_name  = aws_api_gateway_stage.this.stage_name
  method_path = "*/*"

  settings {
    metrics_enabled      = true
    logging_level        = "ERROR"
    data_trace_enabled   = false
    caching_enabled      = false
    cache_data_encrypted = true
  }
}

# Clients: one API key in a usage plan with throttling and a daily quota.

resource "aws_api_gateway_api_key" "this" {
  name        = "${var.project}-tutor"
  description = "The tutor's key for ${var.project} ${var.environment}."
}

resource "aws_api_gateway_usage_plan" "this" {
  name        = "${var.project}-tutor"
  description = "Throttle and daily quota for the tutor."

  api_stages {
    api_id = aws_api_gateway_rest_api.this.id
    stage  = aws_api_gateway_stage.this.stage_name
  }

  throttle_settings {
    rate_limit  = var.api_throttle_rate_limit
    burst_limit = var.api_throttle_burst_limit
  }

  quota_settings {
    limit  = var.api_quota_limit
    period = "DAY"
  }
}

resource "aws_api_gateway_usage_plan_key" "this" {
  key_id        = aws_api_gateway_api_key.this.id
  key_type      = "API_KEY"
  usage_plan_id = aws_api_gateway_usage_plan.this.id
}

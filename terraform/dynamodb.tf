# DynamoDB tables of docs/contracts.md section 7: kt-history (tutor answers, GSI by_day) and kt-mastery
# (nightly mastery rows). On-demand billing, point-in-time recovery, the customer managed key.

resource "aws_dynamodb_table" "history" {
  name                        = var.history_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "user_id"
  range_key                   = "ts"
  deletion_protection_enabled = var.dynamodb_deletion_protection

  attribute {
    name = "user_id"
    type = "S"
  }

  attribute {
    name = "ts"
    type = "S"
  }

  attribute {
    name = "day"
    type = "S"
  }

  # Users active on a day: the nightly refresh queries day = <date> and reads only the keys.
  global_secondary_index {
    name            = "by_day"
    hash_key        = "day"
    range_key       = "ts"
    projection_type = "KEYS_ONLY"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.this.arn
  }
}

resource "aws_dynamodb_table" "mastery" {
  name                        = var.mastery_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "user_id"
  deletion_protection_enabled = var.dynamodb_deletion_protection

  attribute {
    name = "user_id"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.this.arn
  }
}

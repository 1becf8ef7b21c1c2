# The customer managed KMS key that encrypts the lake, the DynamoDB tables, SageMaker volumes and
# captured data, the Glue job's outputs, logs and bookmarks, the CloudWatch log groups and the SNS topic.

resource "aws_kms_key" "this" {
  description             = "${var.project}: lake, tables, SageMaker, Glue, logs and alarms"
  deletion_window_in_days = var.kms_deletion_window_days
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.project}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:Key policy: Resource "*" is this key only, and administration is limited to this account's IAM principals.
  #checkov:skip=CKV_AWS_111:Key policy: Resource "*" is this key only; service statements are limited by encryption context or source account.
  #checkov:skip=CKV_AWS_356:Key policy: Resource "*" is the only valid value in a key policy and means this key.
  # "*" resource: in a key policy "*" is the key itself (listed in local.iam_star_resource_exceptions).
  # The account may use and administer the key through IAM policies; roles get only what iam.tf grants.
  # The actions are listed one by one instead of "kms:*".
  statement {
    sid     = "KeyAdministration"
    actions = [
      "kms:CancelKeyDeletion",
      "kms:CreateAlias",
      "kms:CreateGrant",
      "kms:Decrypt",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:EnableKey",
      "kms:EnableKeyRotation",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListAliases",
      "kms:ListGrants",
      "kms:ListKeyPolicies",
      "kms:ListKeyRotations",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:RetireGrant",
      "kms:RevokeGrant",
      "kms:RotateKeyOnDemand",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # "*" resource: the key itself (see above). CloudWatch Logs encrypts this account's log groups
  # (API access logs, WAF logs, Glue job logs) with the key.
  statement {
    sid     = "CloudWatchLogsUseKey"
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["${local.logs_arn_prefix}:*"]
    }
  }

  # "*" resource: the key itself (see above). CloudWatch alarms and EventBridge rules publish to the
  # encrypted SNS topic, so these services need the data key.
  statement {
    sid       = "AlarmsAndEventsUseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

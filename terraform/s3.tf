# The S3 lake (docs/contracts.md section 3: raw/, processed/, models/, inference/, events/, monitoring/, artifacts/)
# and its access-log bucket: versioned, encrypted, private, TLS-only, with lifecycle rules; plus the
# code objects the Glue job and SageMaker read (uploaded from glue/ and from `make package`'s dist/).

resource "aws_s3_bucket" "lake" {
  #checkov:skip=CKV_AWS_144:No cross-region replication: the lake is rebuilt from the EdNet source, DynamoDB (PITR) and versioned objects; a replica doubles storage cost.
  bucket        = local.lake_bucket_name
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    bucket_key_enabled = true

    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "lake" {
  bucket        = aws_s3_bucket.lake.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/${local.lake_bucket_name}/"
}

# S3 events go to EventBridge (free on the default bus) so future asset triggers need no bucket change.
resource "aws_s3_bucket_notification" "lake" {
  bucket      = aws_s3_bucket.lake.id
  eventbridge = true
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    id     = "raw-to-infrequent-access"
    status = "Enabled"

    filter {
      prefix = "raw/"
    }

    transition {
      days          = 30
      storage_class = "STANDARD_IA"
    }
  }

  rule {
    id     = "expire-batch-transform-files"
    status = "Enabled"

    filter {
      prefix = "inference/batch/"
    }

    expiration {
      days = 30
    }
  }

  rule {
    id     = "expire-data-capture"
    status = "Enabled"

    filter {
      prefix = "monitoring/data-capture/"
    }

    expiration {
      days = 90
    }
  }

  rule {
    id     = "expire-glue-temp"
    status = "Enabled"

    filter {
      prefix = "artifacts/glue/tmp/"
    }

    expiration {
      days = 7
    }
  }

  # Dataset versions (docs/contracts.md §3): each ingestion and ETL run writes raw/ednet/v=<time>/ or
  # processed/ednet/v=<time>/ and the code (kt.lake.prune) deletes the versions beyond KT_KEEP_VERSIONS
  # after switching the pointer. S3 lifecycle cannot count runs, nor see which version _current.json names:
  # an age-based expiration here would delete the version being served once no run has replaced it for
  # that long. So these rules are the time-based backstop for what the code leaves behind, never the
  # served data: the noncurrent object versions of pruned dataset versions (gone after 7 days instead of
  # the bucket's 30), the delete markers left once those are gone (which would slow every listing of the
  # prefix), and the multipart uploads of a writer killed midway (invisible to listings, billed).
  rule {
    id     = "expire-pruned-raw-versions"
    status = "Enabled"

    filter {
      prefix = "raw/ednet/v="
    }

    noncurrent_version_expiration {
      noncurrent_days = 7
    }

    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-pruned-processed-versions"
    status = "Enabled"

    filter {
      prefix = "processed/ednet/v="
    }

    noncurrent_version_expiration {
      noncurrent_days = 7
    }

    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "noncurrent-versions-and-uploads"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}

resource "aws_s3_bucket_policy" "lake" {
  bucket = aws_s3_bucket.lake.id
  policy = data.aws_iam_policy_document.lake_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.lake]
}

data "aws_iam_policy_document" "lake_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"] # a Deny: wildcard actions only ever narrow access
    resources = [aws_s3_bucket.lake.arn, "${aws_s3_bucket.lake.arn}/*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# Access-log bucket. S3 server access logging can only deliver to an SSE-S3 bucket.
resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target bucket; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are not replicated to another region (audit copy kept in-region for the retention period).
  #checkov:skip=CKV_AWS_145:S3 server access logging does not deliver to SSE-KMS buckets; the log bucket uses SSE-S3.
  bucket        = local.log_bucket_name
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_notification" "logs" {
  bucket      = aws_s3_bucket.logs.id
  eventbridge = true
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

data "aws_iam_policy_document" "logs_bucket" {
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/s3/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.lake.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"] # a Deny: wildcard actions only ever narrow access
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# Code in the lake. `make package` builds dist/ first. source_hash (not etag): with SSE-KMS the S3
# ETag is not the file's MD5, so etag would show a change on every plan.

resource "aws_s3_object" "glue_script" {
  bucket      = aws_s3_bucket.lake.id
  key         = local.glue_script_key
  source      = "${path.module}/../glue/ednet_preprocessor.py"
  source_hash = filemd5("${path.module}/../glue/ednet_preprocessor.py")
  kms_key_id  = aws_kms_key.this.arn
}

resource "aws_s3_object" "skill_mappings" {
  bucket       = aws_s3_bucket.lake.id
  key          = local.skill_mappings_key
  source       = "${path.module}/../glue/skill_mappings.json"
  source_hash  = filemd5("${path.module}/../glue/skill_mappings.json")
  content_type = "application/json"
  kms_key_id   = aws_kms_key.this.arn
}

resource "aws_s3_object" "glue_library" {
  bucket      = aws_s3_bucket.lake.id
  key         = local.glue_library_key
  source      = "${path.module}/../dist/kt_glue.zip"
  source_hash = filemd5("${path.module}/../dist/kt_glue.zip")
  kms_key_id  = aws_kms_key.this.arn
}

resource "aws_s3_object" "sagemaker_code" {
  bucket      = aws_s3_bucket.lake.id
  key         = local.sagemaker_code_key
  source      = "${path.module}/../dist/sourcedir.tar.gz"
  source_hash = filemd5("${path.module}/../dist/sourcedir.tar.gz")
  kms_key_id  = aws_kms_key.this.arn
}

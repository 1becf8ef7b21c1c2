# The Glue ETL job `ednet-preprocessor` (ednet_etl DAG): Glue 5, script and kt library from the lake,
# metrics and continuous logs, and a security configuration that KMS-encrypts its S3 output,
# CloudWatch logs and bookmarks. Job bookmarks are off: every run reads every raw file (a user's
# history, the duplicate rule and the splits need all of them) through Spark readers, which
# bookmarks do not track; the script refuses any other --job-bookmark-option.

resource "aws_glue_security_configuration" "this" {
  name = var.project

  encryption_configuration {
    cloudwatch_encryption {
      cloudwatch_encryption_mode = "SSE-KMS"
      kms_key_arn                = aws_kms_key.this.arn
    }

    job_bookmarks_encryption {
      job_bookmarks_encryption_mode = "CSE-KMS"
      kms_key_arn                   = aws_kms_key.this.arn
    }

    s3_encryption {
      s3_encryption_mode = "SSE-KMS"
      kms_key_arn        = aws_kms_key.this.arn
    }
  }
}

resource "aws_glue_job" "this" {
  name                   = var.glue_job_name
  description            = "EdNet/Riiid raw files to processed sequences and skills (docs/contracts.md section 4)."
  role_arn               = aws_iam_role.glue.arn
  glue_version           = var.glue_version
  worker_type            = var.glue_worker_type
  number_of_workers      = var.glue_number_of_workers
  timeout                = var.glue_timeout_minutes
  max_retries            = 0 # Airflow retries the task; a Glue retry would double-run it
  security_configuration = aws_glue_security_configuration.this.name

  command {
    name            = "glueetl"
    python_version  = "3"
    script_location = local.glue_script_uri
  }

  execution_property {
    max_concurrent_runs = 1
  }

  default_arguments = {
    "--job-language"                     = "python"
    "--job-bookmark-option"              = "job-bookmark-disable"
    "--enable-metrics"                   = "true"
    "--enable-continuous-cloudwatch-log" = "true"
    "--TempDir"                          = local.glue_temp_dir
    "--extra-py-files"                   = local.glue_library_uri
    "--raw"                              = local.raw_uri
    "--processed"                        = local.processed_uri
    "--format"                           = var.glue_input_format
    "--skill-mappings"                   = local.skill_mappings_uri
  }

  depends_on = [
    aws_s3_object.glue_script,
    aws_s3_object.glue_library,
    aws_s3_object.skill_mappings,
  ]
}

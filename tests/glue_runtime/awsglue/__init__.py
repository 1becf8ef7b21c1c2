"""A stand-in for AWS Glue's `awsglue` package, for tests/test_glue_job.py only (never shipped).

It follows the interface and error behaviour of awslabs/aws-glue-libs (branches
glue-5.0 and glue-5.1) for what glue/ednet_preprocessor.py calls:
``awsglue.utils.getResolvedOptions``, ``awsglue.context.GlueContext`` and
``awsglue.job.Job``. Written here from reading those sources, not copied; what
the Glue JVM does behind ``Job`` (bookmark state) is recorded, not modelled.
"""

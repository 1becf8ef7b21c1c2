import pytest

from kt.config import ConfigError, Settings, load_settings, training_paths


def test_defaults_match_design():
    s = load_settings(environ={})
    assert (s.runtime, s.lake, s.mastery_table, s.history_table) == ("local", ".kt/lake", "kt-mastery", "kt-history")
    assert s.endpoint_name == "pythagoras-dkt-endpoint"
    assert s.sagemaker_enabled is False


@pytest.mark.parametrize(
    "var,value",
    [("KT_RUNTIME", "cloud"), ("SAGEMAKER_KT_ENABLED", "maybe"), ("KT_SERVERLESS_MEMORY_MB", "-1"), ("KT_ENDPOINT_MODE", "x"),
     ("KT_SAGEMAKER_NAME_PREFIX", "-dkt"), ("KT_SAGEMAKER_NAME_PREFIX", "dkt_2"), ("KT_SAGEMAKER_NAME_PREFIX", "a" * 34),
     ("KT_DATA_CAPTURE_SAMPLING_PERCENTAGE", "101"), ("KT_ENDPOINT_MIN_INSTANCES", "0")],
)
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(ConfigError, match=var):
        load_settings(environ={var: value})


def test_aws_runtime_reads_ssm_json_and_environment_wins():
    ssm = {"lake": "s3://bucket/kt", "mastery_table": "m-prod", "sagemaker_enabled": True}
    s = load_settings(environ={"KT_RUNTIME": "aws", "KT_MASTERY_TABLE": "from-env"}, ssm=ssm)
    assert s.lake == "s3://bucket/kt"
    assert s.mastery_table == "from-env"
    assert s.sagemaker_enabled is True


def test_aws_runtime_rejects_unknown_ssm_keys_and_local_lakes():
    with pytest.raises(ConfigError, match="unknown keys"):
        load_settings(environ={"KT_RUNTIME": "aws"}, ssm={"lake": "s3://b", "typo_key": 1})
    with pytest.raises(ConfigError, match="KT_LAKE"):
        load_settings(environ={"KT_RUNTIME": "aws"}, ssm={"lake": "/tmp/lake"})


def test_ssm_parameter_read_through_moto():
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/pythagoras-kt/config", Type="String", Value='{"lake": "s3://lake-bucket", "history_table": "h"}'
        )
        s = load_settings(environ={"KT_RUNTIME": "aws", "AWS_DEFAULT_REGION": "us-east-1"})
    assert (s.lake, s.history_table) == ("s3://lake-bucket", "h")


def test_training_paths_from_sagemaker_variables_and_overrides():
    paths = training_paths({"SM_CHANNEL_TRAINING": "/data", "SM_MODEL_DIR": "/model"}, model_dir="/override")
    assert paths.train_channel == "/data"
    assert paths.model_dir == "/override"
    assert paths.checkpoint_dir == "/opt/ml/checkpoints"
    assert isinstance(Settings(), Settings)


def test_promotion_settings_come_from_the_ssm_json_terraform_writes():
    """What dkt_train's endpoint configs keep from Terraform's: name prefix, key, capture sampling, instances."""
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    ssm = {"lake": "s3://b", "sagemaker_name_prefix": "acme-dkt", "kms_key_arn": key,
           "data_capture_sampling_percentage": 0, "endpoint_min_instances": 3}
    s = load_settings(environ={"KT_RUNTIME": "aws"}, ssm=ssm)
    assert (s.sagemaker_name_prefix, s.kms_key_arn, s.data_capture_sampling_percentage, s.endpoint_min_instances) == \
        ("acme-dkt", key, 0, 3)
    defaults = load_settings(environ={})
    assert (defaults.sagemaker_name_prefix, defaults.kms_key_arn, defaults.data_capture_sampling_percentage) == \
        ("pythagoras-dkt", None, 20)
    assert load_settings(environ={"KT_SAGEMAKER_NAME_PREFIX": "a" * 33}).sagemaker_name_prefix == "a" * 33
    with pytest.raises(ConfigError, match=r"/pythagoras-kt/config.sagemaker_name_prefix"):
        load_settings(environ={"KT_RUNTIME": "aws"}, ssm={"lake": "s3://b", "sagemaker_name_prefix": "bad prefix"})

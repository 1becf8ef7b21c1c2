"""Runtime settings: the only module that reads ``os.environ``.

Each setting is looked up as Airflow's ``fetch_variable`` does: the
environment variable first, then the one JSON SSM parameter that Terraform
writes (aws runtime only), then the default. Bad values fail at start with a
message naming the variable.

    from kt.config import load_settings
    settings = load_settings()          # frozen dataclass
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Callable

RUNTIMES = ("local", "aws")
ENDPOINT_MODES = ("serverless", "realtime")
DEFAULT_SSM_PARAMETER = "/pythagoras-kt/config"
# Prefix of every SageMaker name the DAGs create (kt.aws_requests.names), 1 to 33 characters: the longest
# name built on it, Terraform's endpoint config name_prefix "<prefix>-tf-" plus the provider's 26-character
# suffix, must stay within SageMaker's 63. terraform/variables.tf validates sagemaker_name_prefix with this
# same pattern (tests/test_promotion_parity.py holds the two together).
SAGEMAKER_NAME_PREFIX_PATTERN = r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,31}[a-zA-Z0-9])?$"


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot use."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return parse


def _optional(value: str) -> str | None:
    return value or None


def _percentage(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 100:
        raise ValueError(f"expected a percentage from 0 to 100, got {value!r}")
    return number


def _name_prefix(value: str) -> str:
    if not re.fullmatch(SAGEMAKER_NAME_PREFIX_PATTERN, value):
        raise ValueError(f"expected 1 to 33 letters, digits and inner hyphens, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Every runtime setting. Field name = key in the SSM JSON parameter."""

    runtime: str = "local"  # local: executors in plugins/; aws: the Amazon operators
    lake: str = ".kt/lake"  # directory or s3://bucket[/prefix]
    aws_endpoint_url: str | None = None  # a local AWS API (moto server)
    region: str = "us-east-1"
    mastery_table: str = "kt-mastery"
    history_table: str = "kt-history"
    endpoint_name: str = "pythagoras-dkt-endpoint"
    sagemaker_enabled: bool = False  # false: the API serves the Bayesian estimate (Phase 1)
    ssm_parameter: str = DEFAULT_SSM_PARAMETER
    # Deployed names, written by Terraform into the SSM parameter on aws.
    sagemaker_role_arn: str = "arn:aws:iam::000000000000:role/kt-sagemaker"
    training_image_uri: str = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-cpu-py312"
    inference_image_uri: str = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    training_instance_type: str = "ml.g4dn.xlarge"
    transform_instance_type: str = "ml.m5.large"
    endpoint_mode: str = "serverless"
    endpoint_instance_type: str = "ml.g4dn.xlarge"
    endpoint_min_instances: int = 1  # realtime: the variant's InitialInstanceCount
    serverless_memory_mb: int = 3072
    serverless_max_concurrency: int = 20
    sagemaker_name_prefix: str = "pythagoras-dkt"  # every SageMaker name the DAGs create; IAM is scoped to it
    kms_key_arn: str | None = None  # the endpoint config's key (serverless) and the captured data's
    data_capture_sampling_percentage: int = 20  # realtime only: serverless endpoints do not support capture
    glue_job_name: str = "ednet-preprocessor"
    glue_role_name: str = "kt-glue"
    glue_script_location: str | None = None  # s3:// URI of glue/ednet_preprocessor.py
    glue_extra_py_files: str | None = None  # s3:// URI of the kt zip from `make package`
    api_key: str | None = None  # required by `kt api` when set
    alarm_topic_arn: str | None = None
    keep_versions: int = 3  # versions of raw/ednet and processed/ednet kept: the current one and those served before


# field -> (environment variable, parser)
_SOURCES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "runtime": ("KT_RUNTIME", _choice(*RUNTIMES)),
    "lake": ("KT_LAKE", str),
    "aws_endpoint_url": ("AWS_ENDPOINT_URL", _optional),
    "region": ("AWS_DEFAULT_REGION", str),
    "mastery_table": ("KT_MASTERY_TABLE", str),
    "history_table": ("KT_HISTORY_TABLE", str),
    "endpoint_name": ("SAGEMAKER_KT_ENDPOINT", str),
    "sagemaker_enabled": ("SAGEMAKER_KT_ENABLED", _bool),
    "ssm_parameter": ("KT_SSM_PARAMETER", str),
    "sagemaker_role_arn": ("KT_SAGEMAKER_ROLE_ARN", str),
    "training_image_uri": ("KT_TRAINING_IMAGE_URI", str),
    "inference_image_uri": ("KT_INFERENCE_IMAGE_URI", str),
    "training_instance_type": ("KT_TRAINING_INSTANCE_TYPE", str),
    "transform_instance_type": ("KT_TRANSFORM_INSTANCE_TYPE", str),
    "endpoint_mode": ("KT_ENDPOINT_MODE", _choice(*ENDPOINT_MODES)),
    "endpoint_instance_type": ("KT_ENDPOINT_INSTANCE_TYPE", str),
    "endpoint_min_instances": ("KT_ENDPOINT_MIN_INSTANCES", _positive_int),
    "serverless_memory_mb": ("KT_SERVERLESS_MEMORY_MB", _positive_int),
    "serverless_max_concurrency": ("KT_SERVERLESS_MAX_CONCURRENCY", _positive_int),
    "sagemaker_name_prefix": ("KT_SAGEMAKER_NAME_PREFIX", _name_prefix),
    "kms_key_arn": ("KT_KMS_KEY_ARN", _optional),
    "data_capture_sampling_percentage": ("KT_DATA_CAPTURE_SAMPLING_PERCENTAGE", _percentage),
    "glue_job_name": ("KT_GLUE_JOB_NAME", str),
    "glue_role_name": ("KT_GLUE_ROLE_NAME", str),
    "glue_script_location": ("KT_GLUE_SCRIPT_LOCATION", _optional),
    "glue_extra_py_files": ("KT_GLUE_EXTRA_PY_FILES", _optional),
    "api_key": ("KT_API_KEY", _optional),
    "alarm_topic_arn": ("KT_ALARM_TOPIC_ARN", _optional),
    "keep_versions": ("KT_KEEP_VERSIONS", _positive_int),
}
assert set(_SOURCES) == {f.name for f in fields(Settings)}


def env_var(field: str) -> str:
    """The environment variable that sets a field (for messages and docs)."""
    return _SOURCES[field][0]


def _read_ssm(name: str, region: str, endpoint_url: str | None) -> dict[str, Any]:
    import boto3

    client = boto3.client("ssm", region_name=region, endpoint_url=endpoint_url)
    try:
        value = client.get_parameter(Name=name)["Parameter"]["Value"]
    except Exception as e:  # noqa: BLE001 - any failure here is a config failure
        raise ConfigError(f"cannot read SSM parameter {name} ({env_var('ssm_parameter')}): {e}") from e
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"SSM parameter {name} is not JSON: {e}") from e


def load_settings(environ: dict[str, str] | None = None, ssm: dict[str, Any] | None = None) -> Settings:
    """Build Settings from the environment, then the SSM JSON (aws), then defaults."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for field, (var, parse) in _SOURCES.items():
        if var in environ:
            try:
                values[field] = parse(environ[var])
            except ValueError as e:
                raise ConfigError(f"{var}: {e}") from e
    settings = Settings(**values)
    if settings.runtime == "aws":
        if ssm is None:
            ssm = _read_ssm(settings.ssm_parameter, settings.region, settings.aws_endpoint_url)
        unknown = set(ssm) - set(_SOURCES)
        if unknown:
            raise ConfigError(f"SSM parameter {settings.ssm_parameter} has unknown keys: {sorted(unknown)}")
        for field, raw in ssm.items():
            if field in values:
                continue  # the environment wins
            var, parse = _SOURCES[field]
            try:
                values[field] = parse(str(raw).lower() if isinstance(raw, bool) else str(raw))
            except ValueError as e:
                raise ConfigError(f"{settings.ssm_parameter}.{field} ({var}): {e}") from e
        settings = Settings(**values)
    if settings.runtime == "aws" and not settings.lake.startswith("s3://"):
        raise ConfigError(f"{env_var('lake')}: the aws runtime needs an s3:// lake, got {settings.lake!r}")
    return settings


@dataclass(frozen=True)
class TrainingPaths:
    """Where a training run reads and writes: the SageMaker container contract, overridable."""

    train_channel: str = "/opt/ml/input/data/training"
    model_dir: str = "/opt/ml/model"
    checkpoint_dir: str = "/opt/ml/checkpoints"
    output_dir: str = "/opt/ml/output"
    hyperparameters_file: str = "/opt/ml/input/config/hyperparameters.json"
    job_name: str = "local-training"
    # The current model's channel (its model.tar.gz), for the job's evaluation; empty when the request has none
    # (SageMaker sets no SM_CHANNEL_<name> for a channel the request does not name).
    current_channel: str = ""


def training_paths(environ: dict[str, str] | None = None, **overrides: str | None) -> TrainingPaths:
    """SageMaker's SM_* variables, then CLI overrides (non-None), then the container defaults."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, str] = {}
    for field, var in [
        ("train_channel", "SM_CHANNEL_TRAINING"),
        ("model_dir", "SM_MODEL_DIR"),
        ("checkpoint_dir", "KT_CHECKPOINT_DIR"),
        ("output_dir", "SM_OUTPUT_DIR"),
        ("hyperparameters_file", "KT_HYPERPARAMETERS_FILE"),
        ("job_name", "TRAINING_JOB_NAME"),
        ("current_channel", "SM_CHANNEL_CURRENT"),
    ]:
        if environ.get(var):
            values[field] = environ[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingPaths(**values)

"""Every AWS request the pipeline sends, built in one place from the settings and one run id.

Keys are boto's CamelCase, exactly. DAGs pass these dicts as ``config=`` to
the Amazon provider's operators (aws runtime) or to the ``plugins/`` local
operators, which hand them to ``kt.local_sagemaker``. Tests validate them
against botocore's service models.
"""

from __future__ import annotations

from datetime import datetime

from kt import lake
from kt.config import Settings

VARIANT_NAME = "AllTraffic"  # = Terraform's local.variant_name: alarms and autoscaling refer to it
# Data capture as Terraform configures it (terraform/sagemaker.tf): both directions, JSON bodies kept as
# text (encoding JSON) instead of base64. Realtime endpoints only: AWS lists data capture among the
# features serverless endpoints do not support.
CAPTURE_MODES = ("Input", "Output")
CAPTURE_JSON_CONTENT_TYPES = ["application/json"]
MAX_RUNTIME_S = 4 * 3600
MAX_WAIT_S = 8 * 3600  # spot: how long to wait for capacity, including the run
MAX_RESPONSE_BYTES = 100 * 1024 * 1024  # TorchServe's response limit in the container: batch transform's MaxPayloadInMB ceiling
# The training job's MetricDefinitions: they capture the lines kt.train prints, e.g.
# "epoch=2; train_loss=0.61234; valid_auc=0.77120; valid_ece=0.01000; interactions_per_s=45012;".
# Here rather than in kt.train so that building requests (DAG files) does not import torch.
METRIC_REGEXES = {
    "train_loss": r"train_loss=([0-9.]+);",
    "valid_auc": r"valid_auc=([0-9.]+);",
    "interactions_per_s": r"interactions_per_s=([0-9.]+);",
    "test_auc": r"(?<!_)test_auc=([0-9.]+);",  # kt.job_evaluation's line, after training
}
CURRENT_CHANNEL = "current"  # the promoted model.tar.gz, scored by the job next to the candidate (kt.job_evaluation)


def run_id(now: datetime) -> str:
    """The id every name of one run derives from, e.g. 2026-11-25-0200."""
    return now.strftime("%Y-%m-%d-%H%M")


def names(settings: Settings, run: str) -> dict[str, str]:
    """Every SageMaker name of one run, on Terraform's sagemaker_name_prefix (the Airflow role's IAM scope)."""
    prefix = settings.sagemaker_name_prefix
    return {
        "training_job": f"{prefix}-{run}",
        "model": f"{prefix}-{run}",
        "endpoint_config": f"{prefix}-{run}",
        "transform_job": f"{prefix}-refresh-{run}",
    }


def training_job(settings: Settings, run: str, hyperparameters: dict[str, object], spot: bool = True,
                 processed: str | None = None, current_model_url: str | None = None) -> dict:
    """CreateTrainingJob: script mode on the PyTorch image, managed spot, checkpoints in the lake.

    The training channel is one version of the processed dataset: ``processed``
    when given (dkt_train passes the version it checked), else the one the
    pointer names now. A later ETL run cannot change what this job reads.
    ``current_model_url``: the promoted model.tar.gz, as the ``current``
    channel (an S3Prefix on the object's key: SageMaker copies every object
    the prefix matches, here that one) that the job scores on the same test
    split (kt.job_evaluation); none when nothing is promoted yet.
    """
    uris = lake.uris(settings)
    processed = processed or lake.dataset(settings, "processed")
    name = names(settings, run)["training_job"]
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": settings.training_image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": k, "Regex": v} for k, v in METRIC_REGEXES.items()],
        },
        "RoleArn": settings.sagemaker_role_arn,
        "HyperParameters": {
            **{k: str(v) for k, v in hyperparameters.items()},
            "sagemaker_program": "kt_train_entry.py",
            "sagemaker_submit_directory": uris["sourcedir"],
            "sagemaker_region": settings.region,
        },
        "InputDataConfig": [_channel("training", processed.rstrip("/") + "/")],
        "OutputDataConfig": {"S3OutputPath": uris["models"]},
        "ResourceConfig": {"InstanceType": settings.training_instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME_S},
        "CheckpointConfig": {"S3Uri": lake.join(uris["checkpoints"], name), "LocalPath": "/opt/ml/checkpoints"},
        "Tags": [{"Key": "project", "Value": "pythagoras-kt"}],
    }
    if current_model_url:
        request["InputDataConfig"].append(_channel(CURRENT_CHANNEL, current_model_url))
    if spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = MAX_WAIT_S
    return request


def _channel(name: str, s3_uri: str) -> dict:
    """One File-mode input channel of a training job: every object under the S3Prefix, copied to every instance."""
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": s3_uri,
                                        "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }


def model_environment(settings: Settings) -> dict[str, str]:
    """The inference container's environment, the same as Terraform's aws_sagemaker_model (tests/test_promotion_parity.py).

    TS_MAX_RESPONSE_SIZE: TorchServe's default (6,553,500 bytes) kills the worker on a larger answer, which a
    batch transform payload of MaxPayloadInMB can produce; raised to batch transform's own ceiling (100 MB).
    """
    return {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_REGION": settings.region,
        "TS_MAX_RESPONSE_SIZE": str(MAX_RESPONSE_BYTES),
    }


def model(settings: Settings, run: str, model_data_url: str) -> dict:
    """CreateModel: the PyTorch inference image with our model.tar.gz (handlers in code/)."""
    return {
        "ModelName": names(settings, run)["model"],
        "PrimaryContainer": {
            "Image": settings.inference_image_uri,
            "ModelDataUrl": model_data_url,
            "Environment": model_environment(settings),
        },
        "ExecutionRoleArn": settings.sagemaker_role_arn,
        "Tags": [{"Key": "project", "Value": "pythagoras-kt"}],
    }


def endpoint_config(settings: Settings, run: str) -> dict:
    """CreateEndpointConfig with what Terraform's aws_sagemaker_endpoint_configuration sets, so a promotion keeps it.

    Serverless (the default): the KMS key, no data capture (AWS does not support it there).
    Realtime: data capture of requests and responses to the lake's monitoring/data-capture/
    (read by kt.drift), encrypted with the key; no KmsKeyId for the instance storage, as in
    Terraform: instance types with local NVMe storage (ml.g4dn.*, the default) encrypt it in
    hardware, and AWS's CreateEndpointConfig reference has said the call fails with a key for
    them (the current one: the key does not encrypt that storage).
    """
    run_names = names(settings, run)
    variant: dict = {"VariantName": VARIANT_NAME, "ModelName": run_names["model"]}
    request: dict = {"EndpointConfigName": run_names["endpoint_config"], "ProductionVariants": [variant]}
    if settings.endpoint_mode == "serverless":
        variant["ServerlessConfig"] = {
            "MemorySizeInMB": settings.serverless_memory_mb,
            "MaxConcurrency": settings.serverless_max_concurrency,
        }
        if settings.kms_key_arn:
            request["KmsKeyId"] = settings.kms_key_arn
    else:
        variant.update({"InstanceType": settings.endpoint_instance_type,
                        "InitialInstanceCount": settings.endpoint_min_instances, "InitialVariantWeight": 1.0})
        request["DataCaptureConfig"] = data_capture_config(settings)
    request["Tags"] = [{"Key": "project", "Value": "pythagoras-kt"}]
    return request


def data_capture_config(settings: Settings) -> dict:
    """DataCaptureConfig of a realtime endpoint: where kt.drift finds the captured requests."""
    config: dict = {
        "EnableCapture": True,
        "InitialSamplingPercentage": settings.data_capture_sampling_percentage,
        "DestinationS3Uri": lake.uris(settings)["data_capture"],
        "CaptureOptions": [{"CaptureMode": mode} for mode in CAPTURE_MODES],
        "CaptureContentTypeHeader": {"JsonContentTypes": list(CAPTURE_JSON_CONTENT_TYPES)},
    }
    if settings.kms_key_arn:
        config["KmsKeyId"] = settings.kms_key_arn
    return config


def endpoint(settings: Settings, run: str) -> dict:
    """CreateEndpoint / UpdateEndpoint: the fixed endpoint name, pointed at this run's config."""
    return {"EndpointName": settings.endpoint_name, "EndpointConfigName": names(settings, run)["endpoint_config"]}


def transform_job(settings: Settings, run: str, run_date: str, model_name: str) -> dict:
    """CreateTransformJob: one user per JSON line, MultiRecord batches, outputs assembled by line."""
    uris = lake.uris(settings, run_date)
    return {
        "TransformJobName": names(settings, run)["transform_job"],
        "ModelName": model_name,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uris["batch_input"] + "/"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": uris["batch_output"] + "/", "Accept": "application/jsonlines",
                            "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": settings.transform_instance_type, "InstanceCount": 1},
        "Tags": [{"Key": "project", "Value": "pythagoras-kt"}],
    }
